"""One model version loaded for serving: its scorers, its input schema, its checks.

:func:`load_serving_model` reads a model folder (or a store's current version) into a
:class:`ServingModel`: fixed, deep and GBDT coordinates through their own loaders,
random effects into lookup tables (memory-mapped from ``coefficients.arrow`` where the
folder has it, else built from the Parquet table). Before it is handed out, the version
is checked: every entity table finds a sample of its own ids again, and a probe request
built from the model's own schema scores to finite numbers. A version that fails any of
this raises :class:`~gdmix.errors.ModelDirectoryError` and is never served.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from gdmix.config import CoordinateConfig
from gdmix.data.features import FeatureIndex
from gdmix.errors import GDMixError, ModelDirectoryError
from gdmix.losses import inverse_link
from gdmix.model import GDMixModel, model_path
from gdmix.model_dir import coordinate_folder, read_manifest
from gdmix.serving.schema import InputSpec, Request
from gdmix.serving.scorer import GBDTScorer, LinearScorer, RandomScorer, TorchScorer
from gdmix.serving.tables import load_random_table

__all__ = ["ScoreResult", "ServingModel", "load_serving_model"]

logger = logging.getLogger("gdmix")

_COORD_ADAPTER: TypeAdapter[Any] = TypeAdapter(CoordinateConfig)
_SCORERS = {"fixed": LinearScorer, "gbdt": GBDTScorer, "deep": TorchScorer}
#: Ids per entity table looked up again when a version is checked.
_SAMPLE_IDS = 64


@dataclass
class ScoreResult:
    """Scores of one request's rows.

    Attributes
    ----------
    scores : dict of str to ndarray
        Per coordinate, one score per row (training order).
    offset : ndarray or None
        The offset column (models with one).
    total : ndarray
        The logit: offset + every coordinate.
    probability : ndarray
        The mean of the model's task: ``sigmoid(total)`` (logistic), ``total``
        (linear) or ``exp(total)`` (Poisson).
    uid : list or None
        The rows' uid values, when the model has a uid column and the rows carry it.
    task : str
        The model's task; the JSON form names the mean ``probability`` for a logistic
        model and ``mean`` otherwise.
    """

    scores: dict[str, np.ndarray]
    offset: np.ndarray | None
    total: np.ndarray
    probability: np.ndarray
    uid: list[Any] | None = None
    task: str = "logistic"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (lists of floats, exact to the last bit)."""
        out: dict[str, Any] = {"scores": {k: v.tolist() for k, v in self.scores.items()}}
        if self.offset is not None:
            out["offset"] = self.offset.tolist()
        out["total"] = self.total.tolist()
        out["probability" if self.task == "logistic" else "mean"] = self.probability.tolist()
        if self.uid is not None:
            out["uid"] = self.uid
        return out


@dataclass
class ServingModel:
    """A model version ready to score requests.

    Attributes
    ----------
    path : Path
        The version's real folder.
    version : int or None
        Its number in a model store (None for a plain model folder).
    scorers : list
        One scorer per coordinate, in training order.
    inputs : InputSpec
        The fields a request must carry.
    manifest : dict
        The version's manifest (lineage, metrics, creation time).
    load_seconds : float
        Time taken to load and check it.
    """

    path: Path
    version: int | None
    scorers: list[Any]
    inputs: InputSpec
    manifest: dict[str, Any]
    load_seconds: float = 0.0
    loaded_at: float = field(default_factory=time.time)

    def score(self, request: Request) -> ScoreResult:
        """Score every row of ``request`` (raises :class:`RequestError` on bad fields)."""
        n = request.n
        offset = None
        if self.inputs.offset is not None:
            offset = request.offset(self.inputs.offset)
        total = offset.copy() if offset is not None else np.zeros(n)
        scores = {}
        for scorer in self.scorers:
            s = scorer.score(request)
            scores[scorer.name] = s
            total += s
        uid = request.optional(self.inputs.uid) if self.inputs.uid is not None else None
        task = (self.manifest.get("data") or {}).get("task", "logistic")
        return ScoreResult(scores, offset, total, inverse_link(task, total), uid, task)

    def score_rows(
        self, rows: list[dict[str, Any]], context: dict[str, Any] | None = None
    ) -> ScoreResult:
        """Score rows given as Python dicts (the JSON body's ``rows`` and ``context``)."""
        return self.score(Request(rows, context))

    def describe(self) -> dict[str, Any]:
        """What ``GET /model`` shows."""
        m = self.manifest
        return {
            "version": self.version,
            "path": str(self.path),
            "created_utc": m.get("created_utc"),
            "gdmix_version": m.get("gdmix_version"),
            "lineage": m.get("lineage") or {},
            "metrics": m.get("metrics") or {},
            "coordinates": [s.describe() for s in self.scorers],
            "inputs": self.inputs.to_dict(),
            "load_seconds": round(self.load_seconds, 6),
        }

    def probe_request(self) -> Request:
        """A request of one row built from the model's own schema: numeric features 0,
        categorical and bag features null, texts empty, each entity id the first of its
        table, offset 0."""
        row: dict[str, Any] = {}
        for scorer in self.scorers:  # ids first: an id column may be a feature too
            if isinstance(scorer, RandomScorer) and len(scorer.table.entities):
                row.setdefault(scorer.entity, scorer.table.entities.id_at(0))
        for col in self.inputs.entities:
            row.setdefault(col, "")
        for col in self.inputs.numeric:
            row.setdefault(col, 0.0)
        for col in [*self.inputs.categorical, *self.inputs.bags, *self.inputs.texts]:
            row.setdefault(col, None)
        if self.inputs.offset is not None:
            row[self.inputs.offset] = 0.0
        return Request([row])

    def check(self) -> None:
        """Check the version before it serves (see the module docstring).

        Raises
        ------
        ModelDirectoryError
            When an entity table does not find its own ids or the probe request does not
            score to finite numbers.
        """
        rng = np.random.default_rng(0)
        for scorer in self.scorers:
            if not isinstance(scorer, RandomScorer):
                continue
            entities = scorer.table.entities
            n = len(entities)
            if n == 0:
                continue
            sample = np.unique(rng.integers(0, n, size=min(n, _SAMPLE_IDS)))
            ids = [entities.id_at(int(r)) for r in sample]
            found = entities.rows(ids, np.ones(len(ids), dtype=bool))
            if not np.array_equal(found, sample):
                raise ModelDirectoryError(
                    f"{self.path}: the entity table of '{scorer.name}' does not find its own ids"
                )
        result = self.score(self.probe_request())
        if not np.isfinite(result.total).all():
            bad = [k for k, v in result.scores.items() if not np.isfinite(v).all()]
            raise ModelDirectoryError(
                f"{self.path}: a probe row scores to a non-finite logit (coordinates {bad})"
            )


def _refuse_matrix(folder: Path, name: str, features: FeatureIndex | None) -> None:
    """A coordinate trained on a feature matrix passed beside the table (see
    :mod:`gdmix.data.matrices`) reads columns no request field holds: not servable."""
    if features is not None and getattr(features, "matrix", None):
        raise ModelDirectoryError(
            f"{folder}: coordinate '{name}' was trained on a feature matrix given beside the "
            "table; requests cannot carry it, so this model is scored in batch only"
        )


def _version_number(path: Path) -> int | None:
    if path.parent.name == "versions" and path.name.isdigit():
        return int(path.name)
    return None


def _random_scorer(
    path: Path, entry: dict[str, Any], config: Any, kinds: dict[str, str]
) -> RandomScorer:
    folder = coordinate_folder(path, config.name)
    try:
        features = FeatureIndex.from_dict(json.loads((folder / "features.json").read_text()))
    except (OSError, KeyError, TypeError, ValueError) as err:
        raise ModelDirectoryError(f"{folder}/features.json is unreadable: {err}") from None
    _refuse_matrix(path, config.name, features)

    def from_parquet() -> Any:
        from gdmix.effects.random_effect import RandomEffect

        logger.info("%s: no current %s; reading the Parquet table", folder, "coefficients.arrow")
        return RandomEffect.load(folder, config, entry["params"])

    try:
        table = load_random_table(folder, from_parquet, features.n_features)
    except (OSError, ValueError) as err:
        raise ModelDirectoryError(f"coordinate folder {folder}: {err}") from None
    return RandomScorer(config.name, config.entity, features, table, kinds)


def _input_spec(model: GDMixModel, configs: list[Any], kinds: dict[str, str]) -> InputSpec:
    spec = InputSpec(offset=model.data.offset, uid=model.data.uid)
    for config in configs:
        feats = config.features
        spec.numeric.update(feats.numeric)
        spec.bags.update(feats.bags)
        for col in [*feats.categorical, *(c for h in feats.hashed for c in h.columns)]:
            spec.categorical[col] = kinds.get(col)
        spec.texts.update(t.column for t in feats.text)
        if config.type == "random":
            spec.entities.add(config.entity)
        text = getattr(config, "text", None)
        if text is not None:
            spec.texts.add(text.column)
    return spec


def load_serving_model(
    path: str | os.PathLike[str], *, trust_custom_code: bool = False
) -> ServingModel:
    """Load and check a model version for serving.

    Parameters
    ----------
    path : path
        A model folder, or a model store (its current version, pinned to its real folder).
    trust_custom_code : bool
        Allow a deep coordinate to import the custom module its manifest names.

    Returns
    -------
    ServingModel

    Raises
    ------
    ModelDirectoryError
        When the folder is not a loadable gdmix model or fails the checks.
    """
    start = time.perf_counter()
    folder = model_path(path)
    manifest = read_manifest(folder)
    configs = []
    for entry in manifest["coordinates"]:
        try:
            configs.append(_COORD_ADAPTER.validate_python(entry["config"]))
        except ValidationError as err:
            raise ModelDirectoryError(
                f"{folder}/manifest.json: coordinate '{entry['name']}' has a bad config ({err})"
            ) from None
    others = [c.name for c in configs if c.type != "random"]
    model = GDMixModel.load(folder, trust_custom_code=trust_custom_code, coordinates=others)
    kinds = dict(model.column_kinds)
    scorers: list[Any] = []
    for entry, config in zip(manifest["coordinates"], configs, strict=True):
        if config.type == "random":
            scorers.append(_random_scorer(folder, entry, config, kinds))
        else:
            _refuse_matrix(folder, config.name, model[config.name].features)
            scorers.append(_SCORERS[config.type](model[config.name], kinds))
    spec = _input_spec(model, configs, kinds)
    serving = ServingModel(folder, _version_number(folder), scorers, spec, manifest)
    try:
        serving.check()
    except GDMixError:
        raise
    except Exception as err:  # a probe that crashes a scorer: the version is unusable
        raise ModelDirectoryError(f"{folder}: the probe request failed ({err!r})") from None
    serving.load_seconds = time.perf_counter() - start
    return serving
