"""A trained GDMix model: scoring, evaluation and the model directory.

Model directory layout (format version 1)::

    model_dir/
      manifest.json                    format, version, column roles, coordinates, metrics
      coordinates/<name>/features.json feature index map of the coordinate
      coordinates/<name>/coefficients.parquet

Fixed effects store one row per feature (``feature``, ``coefficient``, intercept
first); random effects one row per entity (``entity_id``, ``n_rows``, ``intercept``,
``indices``, ``values``, and with variances ``intercept_variance``, ``variances``; a
streamed model's table is a folder of Parquet parts). A GBDT coordinate's folder holds
``model.txt`` (LightGBM) and ``gbdt.json``; a deep one its architecture and
``state_dict``. A directory is written under a temporary name and
renamed into place, so a reader never sees half a model.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import TypeAdapter, ValidationError

from gdmix._version import __version__
from gdmix.config import CoordinateConfig, DataConfig
from gdmix.data.io import TableLike, read_table
from gdmix.data.roles import extract_roles
from gdmix.effects.base import Coordinate
from gdmix.effects.fixed_linear import FixedLinearEffect
from gdmix.effects.random_effect import RandomEffect
from gdmix.errors import ConfigError, DataError, ModelDirectoryError
from gdmix.losses import sigmoid
from gdmix.metrics import evaluate as evaluate_scores

__all__ = [
    "FORMAT_VERSION",
    "GDMixModel",
    "coordinate_class",
    "make_coordinate",
    "write_manifest",
    "write_model_directory",
]

FORMAT_NAME = "gdmix-model"
FORMAT_VERSION = 1
_COORD_ADAPTER: TypeAdapter[Any] = TypeAdapter(CoordinateConfig)
# Coordinate types whose implementation needs optional dependencies are imported on use.
_LAZY_TYPES = {
    "deep": ("gdmix.deep.fixed_torch", "TorchFixedEffect", "torch"),
    "gbdt": ("gdmix.deep.fixed_gbdt", "GBDTFixedEffect", "lightgbm"),
}


def coordinate_class(kind: str) -> type[Coordinate]:
    """The class implementing coordinate type ``kind`` (fixed, random, deep, gbdt)."""
    if kind == "fixed":
        return FixedLinearEffect
    if kind == "random":
        return RandomEffect
    module_name, class_name, package = _LAZY_TYPES[kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        if err.name != package:
            raise
        raise ConfigError(
            f"coordinate type '{kind}' needs the '{package}' package: install gdmix[deep]"
        ) from None
    return getattr(module, class_name)


def make_coordinate(config: Any) -> Coordinate:
    """Create the (unfitted) coordinate object for a coordinate config."""
    return coordinate_class(config.type)(config)


class GDMixModel:
    """A generalized (deep) mixed model: ``logit = offset + sum of coordinate scores``.

    Parameters
    ----------
    coordinates : list of Coordinate
        Fitted coordinates, in training order.
    data : DataConfig
        Column roles (label, weight, offset, uid) the model was trained with.
    metrics : dict, optional
        Final metrics, saved in the manifest.
    history : list of dict, optional
        Training history (one record per coordinate update), saved in the manifest.
    """

    def __init__(
        self,
        coordinates: list[Coordinate],
        data: DataConfig,
        *,
        metrics: dict[str, Any] | None = None,
        history: list[dict[str, Any]] | None = None,
    ) -> None:
        self.coordinates = list(coordinates)
        self.data = data
        self.metrics = dict(metrics or {})
        self.history = list(history or [])

    def __getitem__(self, name: str) -> Coordinate:
        for c in self.coordinates:
            if c.name == name:
                return c
        raise KeyError(f"no coordinate named '{name}' (have {[c.name for c in self.coordinates]})")

    def __repr__(self) -> str:
        parts = ", ".join(f"{c.name}:{c.kind}" for c in self.coordinates)
        return f"GDMixModel([{parts}])"

    # -- scoring -------------------------------------------------------------
    def score(self, data: TableLike, *, where: str = "scoring data") -> pd.DataFrame:
        """Per-coordinate scores and their total (the logit) for every row.

        Parameters
        ----------
        data : DataFrame or path
            Table with the feature, entity and (if configured) offset columns.

        Returns
        -------
        DataFrame
            The uid column (if configured), one column per coordinate, ``offset`` when an
            offset column is configured, and ``total`` = offset + every coordinate.
            Entities unseen in training contribute 0.
        """
        frame = read_table(data)
        roles = extract_roles(frame, self.data, where, need_label=False)
        out: dict[str, Any] = {}
        if roles.uid is not None:
            out[self.data.uid] = roles.uid.to_numpy()
        total = roles.offset.copy()
        for c in self.coordinates:
            s = c.score(c.design(frame, where))
            out[c.name] = s
            total += s
        if self.data.offset is not None:
            out["offset"] = roles.offset
        out["total"] = total
        return pd.DataFrame(out)

    def predict_proba(self, data: TableLike) -> np.ndarray:
        """Probability of the positive class for every row."""
        return sigmoid(self.score(data)["total"].to_numpy())

    def evaluate(
        self, data: TableLike, *, group_by: list[str] | None = None, where: str = "evaluation data"
    ) -> dict[str, float]:
        """AUC, log loss and per-entity AUC (``auc@col`` for each ``group_by`` column).

        Metrics are also reported after each coordinate is added, as
        ``auc_after@<coordinate>``, in training order.
        """
        frame = read_table(data)
        roles = extract_roles(frame, self.data, where, need_label=True)
        assert roles.y is not None
        scores = self.score(frame, where=where)
        groups = {}
        for col in group_by or []:
            if col not in frame.columns:
                raise DataError(f"{where}: group-by column '{col}' does not exist")
            groups[col] = frame[col].to_numpy()
        result = evaluate_scores(
            roles.y, scores["total"].to_numpy(), sample_weight=roles.weight, groups=groups
        )
        running = roles.offset.copy()
        for c in self.coordinates:
            running = running + scores[c.name].to_numpy()
            part = evaluate_scores(roles.y, running, sample_weight=roles.weight)
            result[f"auc_after@{c.name}"] = part["auc"]
        return result

    # -- persistence ---------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model directory atomically (temporary folder, then rename).

        An existing gdmix model at ``path`` is replaced; any other non-empty folder is
        left alone and an error is raised.
        """

        def write(tmp: Path) -> None:
            for c in self.coordinates:
                c.save(tmp / "coordinates" / c.name)
            write_manifest(tmp, self.data, self.coordinates, self.metrics, self.history)

        return write_model_directory(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GDMixModel:
        """Read a model directory written by :meth:`save`.

        Raises
        ------
        ModelDirectoryError
            When ``path`` is not a gdmix model directory or is incomplete.
        """
        path = Path(path)
        manifest = _read_manifest(path)
        try:
            data = DataConfig.model_validate(manifest["data"])
            coords = []
            for entry in manifest["coordinates"]:
                config = _COORD_ADAPTER.validate_python(entry["config"])
                coord_cls = coordinate_class(config.type)
                coords.append(coord_cls.load(path / entry["path"], config, entry["params"]))
        except (KeyError, TypeError, ValidationError) as err:
            raise ModelDirectoryError(f"{path}: manifest.json is malformed ({err})") from None
        return cls(coords, data, metrics=manifest.get("metrics"), history=manifest.get("history"))


def coordinate_entry(coordinate: Coordinate) -> dict[str, Any]:
    """Manifest entry of one coordinate."""
    return {
        "name": coordinate.name,
        "path": f"coordinates/{coordinate.name}",
        "params": coordinate.params,
        "config": coordinate.config.model_dump(mode="json"),
    }


def write_manifest(
    folder: Path,
    data: DataConfig,
    coordinates: list[Coordinate],
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
) -> None:
    """Write ``manifest.json`` of a model directory."""
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "gdmix_version": __version__,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": data.model_dump(mode="json"),
        "coordinates": [coordinate_entry(c) for c in coordinates],
        "metrics": _jsonable(metrics),
        "history": _jsonable(history),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def write_model_directory(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Create a model directory atomically: ``write(tmp)`` fills a temporary folder that
    then replaces ``path``.

    An existing gdmix model at ``path`` is replaced; any other non-empty folder is
    refused. If ``write`` fails, nothing at ``path`` changes and the temporary folder
    is removed.
    """
    path = Path(path)
    if path.exists() and not _is_replaceable(path):
        raise ModelDirectoryError(
            f"{path} exists and is not a gdmix model directory; refusing to overwrite it"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir()
        write(tmp)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise ModelDirectoryError(f"{path} is not a gdmix model directory (no such folder)")
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except OSError:
        raise ModelDirectoryError(
            f"{path} is not a gdmix model directory (no manifest.json)"
        ) from None
    except json.JSONDecodeError as err:
        raise ModelDirectoryError(f"{path}/manifest.json is not valid JSON: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ModelDirectoryError(f"{path} is not a gdmix model directory (wrong manifest)")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelDirectoryError(
            f"{path}: model format version {version} is not supported (this gdmix reads "
            f"{FORMAT_VERSION})"
        )
    return manifest


def _is_replaceable(path: Path) -> bool:
    if path.is_dir() and not any(path.iterdir()):
        return True
    try:
        _read_manifest(path)
    except ModelDirectoryError:
        return False
    return True


def _jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays inside nested containers to JSON types."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
