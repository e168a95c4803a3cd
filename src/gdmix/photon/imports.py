"""Import Photon ``BayesianLinearModelAvro`` files as a gdmix model.

A fixed-effect file (one record) becomes a fixed coordinate, a random-effect file or
folder (one record per entity, model id = entity id) a random coordinate; the means
become coefficients through the name/term mapping of :mod:`gdmix.photon.names`, laid
out by each coordinate's features (its config, or ``bags: [features]``: every
coefficient a key of the bag column ``features``, the bag of Photon's training
records). Variances are read past (scores do not use them), as Photon's own loader
does.

A folder that :func:`gdmix.photon.export_model` wrote carries ``gdmix-photon.json``:
the model's column roles, each coordinate's config and feature index map and the type
of its entity ids, so that the imported model is the exported one (identical scores).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
from pydantic import TypeAdapter, ValidationError

from gdmix.config import CoordinateConfig, DataConfig, GDMixConfig, load_config
from gdmix.config_base import FeatureConfig
from gdmix.data.avro import avro_files
from gdmix.data.entity_keys import int_like
from gdmix.data.features import FeatureIndex
from gdmix.effects.random_table import DENSE_MAX_FEATURES, RandomEffectArrays, write_coefficients
from gdmix.errors import ConfigError, DataError, ModelDirectoryError
from gdmix.photon.export import NOTES_FORMAT, fastavro_module
from gdmix.photon.folder import COEFFICIENTS, FIXED_EFFECT, ID_INFO, NOTES, RANDOM_EFFECT
from gdmix.photon.names import INTERCEPT_KEY, index_from_keys, key_columns

__all__ = ["DEFAULT_BAG", "import_model", "model_task", "read_linear_models"]

#: The bag column that holds a coordinate's features when nothing else says.
DEFAULT_BAG = "features"
_ADAPTER: TypeAdapter[Any] = TypeAdapter(CoordinateConfig)


def read_linear_models(source: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The ``BayesianLinearModelAvro`` records of an Avro file or folder.

    Raises
    ------
    DataError
        When there is no Avro file, or a file is not Avro or lacks ``modelId``/``means``.
    """
    fastavro = fastavro_module()
    files = avro_files(source)
    if not files:
        raise DataError(f"{source}: no Avro file found")
    records: list[dict[str, Any]] = []
    for path in files:
        try:
            with open(path, "rb") as fo:
                batch = list(fastavro.reader(fo))
        except (ValueError, OSError, EOFError, TypeError, KeyError, IndexError) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            raise DataError(f"cannot read {path} as Avro: {reason}") from None
        for rec in batch:
            if not isinstance(rec, dict) or "modelId" not in rec or "means" not in rec:
                raise DataError(f"{path}: records must be BayesianLinearModelAvro (modelId, means)")
        records += batch
    return records


#: Words of a ``modelClass`` or ``lossFunction`` that name a gdmix task.
_TASK_WORDS = {"Logistic": "logistic", "LinearRegression": "linear", "Squared": "linear",
               "Poisson": "poisson"}  # fmt: skip


def model_task(records: list[dict[str, Any]], where: str) -> str | None:
    """The gdmix task (logistic, linear, poisson) the records' ``modelClass`` and
    ``lossFunction`` name; None when they name none.

    Raises
    ------
    DataError
        When they name a model gdmix has no task for, or several tasks.
    """
    found: set[str] = set()
    for rec in records:
        for field in ("modelClass", "lossFunction"):
            value = rec.get(field)
            if not value:
                continue
            tasks = {t for word, t in _TASK_WORDS.items() if word in value}
            if len(tasks) != 1:
                raise DataError(
                    f"{where}: model '{rec['modelId']}' has {field} {value}; gdmix has logistic, "
                    "linear and Poisson regression models"
                )
            found |= tasks
    if len(found) > 1:
        raise DataError(f"{where}: the models mix tasks {sorted(found)}")
    return found.pop() if found else None


def _means(rec: dict[str, Any], where: str) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for m in rec["means"]:
        key = (str(m["name"]), str(m.get("term") or ""))
        value = float(m["value"])
        if key in out:
            raise DataError(f"{where}: model '{rec['modelId']}' lists {key} twice")
        if not np.isfinite(value):
            raise DataError(f"{where}: model '{rec['modelId']}' has {key} = {value}")
        out[key] = value
    return out


class _Part:
    """One coordinate to import: where its records are and how to lay it out."""

    def __init__(self, name: str, kind: str, path: Path, entity: str | None) -> None:
        self.name, self.kind, self.path, self.entity = name, kind, path, entity
        self.note: dict[str, Any] | None = None


def _id_info(folder: Path) -> list[str]:
    path = folder / ID_INFO
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _read_notes(folder: Path) -> dict[str, Any] | None:
    path = folder / NOTES
    if not path.is_file():
        return None
    try:
        notes = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable ({err})") from None
    if not isinstance(notes, dict) or notes.get("format") != NOTES_FORMAT:
        raise DataError(f"{path}: not a gdmix Photon export's notes")
    return notes


def _parts_of_folder(folder: Path) -> list[_Part]:
    parts = []
    for sub, kind in ((FIXED_EFFECT, "fixed"), (RANDOM_EFFECT, "random")):
        top = folder / sub
        if not top.is_dir():
            continue
        for child in sorted(p for p in top.iterdir() if p.is_dir()):
            info = _id_info(child)
            entity = info[0] if kind == "random" and info else None
            data = child / COEFFICIENTS if (child / COEFFICIENTS).is_dir() else child
            parts.append(_Part(child.name, kind, data, entity))
    if not parts:
        raise DataError(f"{folder}: no {FIXED_EFFECT}/ or {RANDOM_EFFECT}/ model folders")
    return parts


def _spec(part: _Part, config: GDMixConfig | None, task: str) -> Any:
    """The coordinate config of ``part``: from ``config``, else the export's notes, else
    the defaults (``bags: [features]``); of the model's ``task``."""
    given = None
    if config is not None:
        given = next((c for c in config.coordinates if c.name == part.name), None)
    if given is not None:
        if given.type != part.kind:
            raise ConfigError(
                f"coordinate '{part.name}' is a {part.kind} effect in the Photon model but "
                f"'{given.type}' in the config"
            )
        if part.kind == "random" and part.entity and given.entity != part.entity:
            raise ConfigError(
                f"coordinate '{part.name}': the Photon model's entity column is "
                f"'{part.entity}', the config's '{given.entity}'"
            )
        return given
    if part.note is not None:
        try:
            return _ADAPTER.validate_python({**part.note["config"], "task": task})
        except (ValidationError, KeyError, TypeError) as err:
            raise DataError(f"coordinate '{part.name}': bad config in {NOTES} ({err})") from None
    raw: dict[str, Any] = {"name": part.name, "type": part.kind, "task": task,
                           "features": {"bags": [DEFAULT_BAG]}}  # fmt: skip
    if part.kind == "random":
        if not part.entity:
            raise ConfigError(
                f"random effect '{part.name}' needs its entity column (the column holding "
                "the ids its models are named by)"
            )
        raw["entity"] = part.entity
    return _ADAPTER.validate_python(raw)


def _params(spec: Any, note: dict[str, Any] | None) -> dict[str, Any]:
    if note is not None and note.get("params"):
        return dict(note["params"])
    params = dict(spec.search_grid()[0])
    return {k: (v if isinstance(v, int | float) or v is None else 1.0) for k, v in params.items()}


def _index(part: _Part, spec: Any, keys: set[tuple[str, str]]) -> FeatureIndex:
    note = part.note
    where = f"coordinate '{part.name}'"
    if note is not None and note.get("config", {}).get("features") == spec.features.model_dump(
        mode="json"
    ):
        return FeatureIndex.from_dict(note["features"])
    return index_from_keys(keys, FeatureConfig.model_validate(spec.features.model_dump()), where)


def _place(
    means: dict[tuple[str, str], float], lookup: dict[tuple[str, str], list[int]], where: str
) -> tuple[float, list[int], list[float]]:
    b = 0.0
    cols: list[int] = []
    vals: list[float] = []
    for key, value in means.items():
        if key == INTERCEPT_KEY:
            b = value
            continue
        found = lookup.get(key)
        if found is None:
            raise DataError(f"{where}: feature {key} is not in the coordinate's features")
        cols += found
        vals += [value] * len(found)
    return b, cols, vals


def _write_fixed(folder: Path, part: _Part, spec: Any, records: list[dict[str, Any]]) -> None:
    where = f"fixed effect '{part.name}' ({part.path})"
    if len(records) != 1:
        raise DataError(f"{where}: a fixed effect is one model; found {len(records)} records")
    means = _means(records[0], where)
    index = _index(part, spec, set(means))
    b, cols, vals = _place(means, key_columns(index), where)
    coef = np.zeros(index.n_features)
    coef[cols] = vals
    folder.mkdir(parents=True)
    (folder / "features.json").write_text(json.dumps(index.to_dict()))
    table = pd.DataFrame(
        {"feature": ["(intercept)", *index.feature_names()], "coefficient": [b, *coef.tolist()]}
    )
    pq.write_table(
        pa.Table.from_pandas(table, preserve_index=False), folder / "coefficients.parquet"
    )


def _entity_index(ids: list[str], kind: str | None) -> pd.Index:
    if kind is None:
        ints, ok = int_like(pd.Series(ids, dtype=object))
        canonical = ok.all() and all(str(i) == s for i, s in zip(ints.tolist(), ids, strict=True))
        kind = "int" if canonical and len(ids) else "str"
    if kind == "int":
        ints, ok = int_like(pd.Series(ids, dtype=object))
        if not ok.all():
            raise DataError(f"model ids such as {ids[int(np.argmin(ok))]!r} are not integers")
        return pd.Index(ints, dtype=np.int64)
    return pd.Index(ids, dtype=object)


def _write_random(folder: Path, part: _Part, spec: Any, records: list[dict[str, Any]]) -> None:
    where = f"random effect '{part.name}' ({part.path})"
    all_means = [_means(r, where) for r in records]
    keys = {k for m in all_means for k in m}
    index = _index(part, spec, keys)
    lookup = key_columns(index)
    ids = [str(r["modelId"]) for r in records]
    kind = part.note.get("entity_key") if part.note is not None else None
    entity_ids = _entity_index(ids, kind)
    if not entity_ids.is_unique:
        dupes = entity_ids[entity_ids.duplicated()][:3].tolist()
        raise DataError(f"{where}: model ids appear more than once: {dupes}")
    n, d = len(ids), index.n_features
    intercept = np.zeros(n)
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for e, means in enumerate(all_means):
        intercept[e], c, v = _place(means, lookup, where)
        rows += [e] * len(c)
        cols += c
        vals += v
    coef = sp.csr_matrix((vals, (rows, cols)), shape=(n, d), dtype=np.float64)
    order = np.argsort(entity_ids.to_numpy(), kind="stable")
    coef = coef[order]
    coef.sort_indices()
    arrays = RandomEffectArrays(
        entity_ids=entity_ids[order],
        n_rows=np.zeros(n, dtype=np.int64),
        intercept=intercept[order],
        coef=coef if d > DENSE_MAX_FEATURES else coef.toarray(),
    )
    folder.mkdir(parents=True)
    (folder / "features.json").write_text(json.dumps(index.to_dict()))
    write_coefficients(arrays, folder / "coefficients.parquet")


def _parts(
    source: str | os.PathLike[str] | None,
    fixed: Mapping[str, str | os.PathLike[str]] | None,
    random: Mapping[str, str | os.PathLike[str]] | None,
    entities: Mapping[str, str] | None,
    config: GDMixConfig | None,
) -> tuple[list[_Part], dict[str, Any] | None]:
    parts: list[_Part] = []
    notes = None
    if source is not None:
        folder = Path(source)
        if not folder.is_dir():
            raise DataError(f"{folder}: not a Photon model folder")
        parts += _parts_of_folder(folder)
        notes = _read_notes(folder)
    given = {c.name: c for c in (config.coordinates if config is not None else [])}
    for name, path in (fixed or {}).items():
        parts.append(_Part(name, "fixed", Path(path), None))
    for name, path in (random or {}).items():
        entity = (entities or {}).get(name) or getattr(given.get(name), "entity", None)
        parts.append(_Part(name, "random", Path(path), entity))
    for part in parts:
        if entities and part.name in entities:
            part.entity = entities[part.name]
        if not part.path.exists():
            raise DataError(f"coordinate '{part.name}': {part.path} does not exist")
    names = [p.name for p in parts]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"coordinate name(s) {dupes} given twice")
    if notes is not None:
        by_name = {e.get("name"): e for e in notes.get("coordinates", [])}
        for part in parts:
            part.note = by_name.get(part.name)
        rank = {n: i for i, n in enumerate(by_name)}
        parts.sort(key=lambda p: rank.get(p.name, len(rank)))
    if config is not None:
        rank = {c.name: i for i, c in enumerate(config.coordinates)}
        parts.sort(key=lambda p: rank.get(p.name, len(rank)))
    if not parts:
        raise ConfigError("nothing to import: give a Photon model folder, or fixed=/random= files")
    return parts, notes


def import_model(
    source: str | os.PathLike[str] | None = None,
    *,
    fixed: Mapping[str, str | os.PathLike[str]] | None = None,
    random: Mapping[str, str | os.PathLike[str]] | None = None,
    entities: Mapping[str, str] | None = None,
    config: GDMixConfig | str | os.PathLike[str] | None = None,
    data: DataConfig | Mapping[str, Any] | None = None,
) -> Any:
    """Build a gdmix model from Photon ``BayesianLinearModelAvro`` files.

    Parameters
    ----------
    source : path, optional
        A Photon/GAME model folder (``fixed-effect/<name>/coefficients/*.avro``,
        ``random-effect/<name>/coefficients/*.avro`` with ``id-info``), such as
        :func:`gdmix.photon.export_model` writes.
    fixed : dict of str to path, optional
        More fixed effects: coordinate name -> Avro file or folder (one record).
    random : dict of str to path, optional
        More random effects: coordinate name -> Avro file or folder (one record per
        entity).
    entities : dict of str to str, optional
        Entity column of each random effect (default: the config's, else the folder's
        ``id-info``).
    config : GDMixConfig or path, optional
        A gdmix config (or its YAML file) whose coordinates of the same names give the
        features (numeric, categorical, bag columns), entity column, intercept and
        ``l2``, and whose ``data`` the column roles. Coordinates it does not name take
        the export's notes, else ``features: {bags: [features]}``.
    data : DataConfig or dict, optional
        Column roles (label, offset, ...), over the config's and the notes'.

    Returns
    -------
    GDMixModel
        Coordinates in the config's order (else the export's, else fixed effects first).

    Raises
    ------
    DataError
        When a file is missing or not a Photon linear model (logistic, linear or Poisson
        regression), the models mix tasks, a model lists a feature twice, or a feature
        fits no column of its coordinate.
    ConfigError
        When a random effect has no entity column, or the config disagrees with the
        files on a coordinate's type or entity column, or on the task.
    """
    from gdmix.model import GDMixModel, coordinate_class

    if isinstance(config, str | os.PathLike):
        config = load_config(config)
    parts, notes = _parts(source, fixed, random, entities, config)
    contents = [(part, read_linear_models(part.path)) for part in parts]
    tasks = {t for part, records in contents if (t := model_task(records, str(part.path)))}
    if len(tasks) > 1:
        raise DataError(f"the coordinates' models are of several tasks: {sorted(tasks)}")
    if config is not None and tasks and config.task not in tasks:
        raise ConfigError(
            f"the Photon models are {tasks.pop()} regressions but the config's task is "
            f"{config.task!r}"
        )
    if data is not None:
        raw_roles = data.model_dump() if isinstance(data, DataConfig) else dict(data)
    elif config is not None:
        raw_roles = config.data.model_dump()
    elif notes is not None:
        raw_roles = dict(notes.get("data") or {})
    else:
        raw_roles = {}
    task = config.task if config is not None else next(iter(tasks), None)
    task = task or raw_roles.get("task") or "logistic"
    roles = DataConfig.model_validate({**raw_roles, "task": task})
    coords = []
    with tempfile.TemporaryDirectory(prefix="gdmix-photon-") as tmp:
        for part, records in contents:
            spec = _spec(part, config, task)
            folder = Path(tmp) / part.name
            if part.kind == "fixed":
                _write_fixed(folder, part, spec, records)
            else:
                _write_random(folder, part, spec, records)
            try:
                coord = coordinate_class(part.kind).load(folder, spec, _params(spec, part.note))
            except ModelDirectoryError as err:
                raise DataError(f"coordinate '{part.name}': {err}") from None
            coords.append(coord)
    kinds = (notes or {}).get("columns") or {}
    lineage = {"mode": "import-photon", "source": str(source) if source is not None else None}
    return GDMixModel(coords, roles, column_kinds=kinds, lineage=lineage)
