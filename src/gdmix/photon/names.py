"""How a coordinate's design columns are named in Photon's name-term-value lists.

Photon names every feature by a ``(name, term)`` pair; gdmix by the column it comes
from (see :class:`gdmix.data.features.FeatureIndex`). The mapping, one pair per design
column:

==========================================  ====================  ===================
gdmix design column                         Photon ``name``       Photon ``term``
==========================================  ====================  ===================
numeric column ``age``                      ``age``               ``""`` (empty)
level ``doctor`` of categorical ``job``     ``job``               ``doctor``
key ``(n, t)`` of any bag column            ``n``                 ``t``
column ``m`` of a feature matrix            ``m``                 ``""``
word or n-gram ``w`` of text column ``t``   ``t``                 ``w``
bucket ``j`` of hashed block ``h``          ``h`` (``a+b``: two   ``"j"``
                                            columns sharing it)
the intercept                               ``(INTERCEPT)``       ``""``
==========================================  ====================  ===================

So a numeric column is the bag feature ``{name: col, term: "", value: x}`` and a
categorical level the bag feature ``{name: col, term: level, value: 1}``: a table with
columns and the same rows written as Photon feature bags (one bag per coordinate, or
several) give the same design, up to the order of its columns.

The bag column a key came from is not part of the pair: Photon's feature shard is the
union of its bags. Two design columns of one coordinate with the same pair (the key
``(n, t)`` in two bag columns, a numeric column named like a bag feature) are one Photon
feature; they are exported only when their coefficients are equal.
"""

from __future__ import annotations

from collections import defaultdict

from gdmix.config_base import FeatureConfig
from gdmix.data.features import FeatureIndex
from gdmix.errors import DataError
from gdmix.photon.schemas import INTERCEPT_NAME, INTERCEPT_TERM

__all__ = ["INTERCEPT_KEY", "column_keys", "index_from_keys", "key_columns"]

#: The intercept's ``(name, term)``.
INTERCEPT_KEY = (INTERCEPT_NAME, INTERCEPT_TERM)
_SEP = "\x1f"


def column_keys(index: FeatureIndex) -> list[tuple[str, str]]:
    """The Photon ``(name, term)`` of every design column of ``index``, in design order."""
    keys = [(col, "") for col in index.numeric]
    for col, levels in index.categorical.items():
        keys += [(col, level) for level in levels]
    for bag_keys in index.bags.values():
        for key in bag_keys:
            name, _, term = key.partition(_SEP)
            keys.append((name, term))
    for col, vocab in index.text.items():  # a word or n-gram of a text column
        keys += [(col, term) for term in vocab.terms]
    for block in index.hashed:  # a bucket of a hashed block
        keys += [(block.name, str(j)) for j in range(block.n_buckets)]
    return keys + [(m, "") for m in index.matrix]


def key_columns(index: FeatureIndex) -> dict[tuple[str, str], list[int]]:
    """The design columns of every Photon ``(name, term)`` of ``index`` (several when a
    key appears in several bag columns)."""
    out: dict[tuple[str, str], list[int]] = defaultdict(list)
    for j, key in enumerate(column_keys(index)):
        out[key].append(j)
    return dict(out)


def index_from_keys(
    keys: set[tuple[str, str]] | list[tuple[str, str]], spec: FeatureConfig, where: str
) -> FeatureIndex:
    """A feature index over the Photon ``keys`` of a model, laid out by ``spec``.

    ``(c, "")`` is numeric column ``c`` when ``spec`` lists it; ``(c, level)`` a level of
    categorical column ``c``; any other key a key of every bag column of ``spec`` (a
    Photon shard is the union of its bags). Numeric columns without a coefficient get 0.

    Raises
    ------
    DataError
        When a key fits no column of ``spec`` (no bag column to hold it).
    """
    numeric = set(spec.numeric)
    categorical = set(spec.categorical)
    levels: dict[str, set[str]] = {c: set() for c in spec.categorical}
    bag_keys: set[str] = set()
    for name, term in keys:
        if (name, term) == INTERCEPT_KEY:
            continue
        if name in numeric and term == "":
            continue
        if name in categorical:
            levels[name].add(term)
        else:
            bag_keys.add(f"{name}{_SEP}{term}")
    if bag_keys and not spec.bags:
        shown = sorted(k.replace(_SEP, ",") for k in bag_keys)[:5]
        raise DataError(
            f"{where}: features ({shown}) are neither numeric nor categorical columns of the "
            "coordinate, and it has no bag column to hold them: add one to its 'features' "
            "(bags: [features], the column of Photon's training records)"
        )
    ordered = sorted(bag_keys)
    return FeatureIndex(
        numeric=list(spec.numeric),
        categorical={c: sorted(levels[c]) for c in spec.categorical},
        bags={b: list(ordered) for b in spec.bags},
    )
