"""Export a gdmix model's linear coordinates as Photon ``BayesianLinearModelAvro`` files.

See :mod:`gdmix.photon.folder` for the folder written and :mod:`gdmix.photon.names` for
how features are named.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from gdmix._version import __version__
from gdmix.errors import ConfigError
from gdmix.model_dir import jsonable, read_manifest
from gdmix.photon.folder import (
    COEFFICIENTS,
    FIXED_EFFECT,
    ID_INFO,
    NOTES,
    PART,
    RANDOM_EFFECT,
    write_export_folder,
)
from gdmix.photon.names import INTERCEPT_KEY, column_keys
from gdmix.photon.schemas import BAYESIAN_LINEAR_MODEL, LOSS_FUNCTIONS, MODEL_CLASSES

__all__ = ["NOTES_FORMAT", "export_model", "linear_records"]

logger = logging.getLogger("gdmix")

#: ``format`` of ``gdmix-photon.json``.
NOTES_FORMAT = "gdmix-photon-export"
_LINEAR = ("fixed", "random")


def fastavro_module() -> Any:
    """The ``fastavro`` module, or a :class:`ConfigError` saying how to install it."""
    try:
        import fastavro
    except ImportError:
        raise ConfigError(
            "Photon models need the 'fastavro' package: install gdmix[avro]"
        ) from None
    return fastavro


def _pairs(
    keys: list[tuple[str, str]], columns: np.ndarray, values: np.ndarray, where: str
) -> list[dict[str, Any]]:
    """Name-term-value records of the design ``columns`` with ``values`` (one record per
    Photon key: columns sharing a key must share their value)."""
    seen: dict[tuple[str, str], float] = {}
    for j, v in zip(columns.tolist(), values.tolist(), strict=True):
        key = keys[j]
        if key == INTERCEPT_KEY:
            raise ConfigError(f"{where}: a feature is named like Photon's intercept {key}")
        if key in seen and seen[key] != v:
            raise ConfigError(
                f"{where}: two features are Photon's ({key[0]!r}, {key[1]!r}) with different "
                f"coefficients ({seen[key]!r}, {v!r}): rename a column (see docs/photon.md)"
            )
        seen[key] = v
    return [{"name": k[0], "term": k[1], "value": float(v)} for k, v in seen.items()]


def _intercept(value: float) -> dict[str, Any]:
    return {"name": INTERCEPT_KEY[0], "term": INTERCEPT_KEY[1], "value": float(value)}


def _record(
    model_id: str, means: list[dict[str, Any]], task: str, variances: Any = None
) -> dict[str, Any]:
    return {
        "modelId": model_id,
        "modelClass": MODEL_CLASSES[task],
        "means": means,
        "variances": variances,
        "lossFunction": LOSS_FUNCTIONS[task],
    }


def linear_records(coord: Any) -> list[dict[str, Any]]:
    """The ``BayesianLinearModelAvro`` records of a fixed or random coordinate: one with
    model id ``fixed-effect`` for a fixed effect, one per entity with a model (model id
    = entity id as text) for a random effect.

    ``modelClass`` and ``lossFunction`` name the Photon model of the coordinate's task
    (logistic, linear or Poisson regression). Means hold the intercept (when the
    coordinate has one) and every non-zero coefficient; a random effect trained with
    variances also gets ``variances`` (the intercept's and those of its stored
    coefficients).

    Raises
    ------
    ConfigError
        When the coordinate is not linear, or two of its features share a Photon name
        and term with different coefficients.
    """
    where = f"coordinate '{coord.name}'"
    if coord.kind not in _LINEAR:
        raise ConfigError(f"{where} is a {coord.kind} effect: Photon models are linear")
    keys = column_keys(coord.features)
    has_b = bool(coord.config.intercept)
    task = getattr(coord.config, "task", "logistic")
    if coord.kind == "fixed":
        coef = np.asarray(coord.coef, dtype=np.float64)
        nz = np.flatnonzero(coef)
        means = ([_intercept(coord.intercept)] if has_b or coord.intercept else []) + _pairs(
            keys, nz, coef[nz], where
        )
        return [_record(FIXED_EFFECT, means, task)]
    table = coord.coefficient_table()
    with_var = "variances" in table.columns
    records = []
    columns = [table[c].tolist() for c in ("entity_id", "intercept", "indices", "values")]
    var_cols = (
        [table["intercept_variance"].tolist(), table["variances"].tolist()] if with_var else None
    )
    for e, (entity, b, idx, val) in enumerate(zip(*columns, strict=True)):
        idx = np.asarray(idx, dtype=np.int64)
        val = np.asarray(val, dtype=np.float64)
        nz = val != 0
        means = ([_intercept(b)] if has_b or b else []) + _pairs(keys, idx[nz], val[nz], where)
        variances = None
        if var_cols is not None:
            var = np.asarray(var_cols[1][e], dtype=np.float64)
            variances = [_intercept(var_cols[0][e])] if has_b else []
            variances += _pairs(keys, idx, var, where)
        records.append(_record(str(entity), means, task, variances))
    return records


def _notes(model: Any, coords: list[Any]) -> dict[str, Any]:
    entries = []
    for c in coords:
        entry = {
            "name": c.name,
            "type": c.kind,
            "config": c.config.model_dump(mode="json"),
            "params": c.params,
            "features": c.features.to_dict(),
        }
        if c.kind == "random":
            entry["entity_key"] = c.key_kind
        entries.append(entry)
    return jsonable(
        {
            "format": NOTES_FORMAT,
            "format_version": 1,
            "gdmix_version": __version__,
            "data": model.data.model_dump(mode="json"),
            "columns": model.column_kinds,
            "coordinates": entries,
        }
    )


def _load(source: str | os.PathLike[str], names: list[str] | None) -> Any:
    from gdmix.model import GDMixModel, model_path

    path = model_path(source)
    entries = read_manifest(path)["coordinates"]
    types = {e["name"]: e.get("config", {}).get("type") for e in entries}
    if names is None:
        names = [n for n, t in types.items() if t in _LINEAR]
    return GDMixModel.load(path, coordinates=names)


def export_model(
    model: Any,
    folder: str | os.PathLike[str],
    *,
    coordinates: list[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a model's linear coordinates as a Photon/GAME model folder.

    Parameters
    ----------
    model : GDMixModel or path
        The model, or its directory (or model store).
    folder : path
        The export folder: new or empty, or an earlier export (with ``overwrite``).
    coordinates : list of str, optional
        Export only these (default: every fixed and random coordinate; deep and GBDT
        coordinates are left out, with a warning).
    overwrite : bool
        Replace an earlier export at ``folder``.

    Returns
    -------
    Path
        ``folder``.

    Raises
    ------
    ConfigError
        When a coordinate named is missing or not linear, or the model has no linear
        coordinate.
    OutputError
        When ``folder`` is not usable (checked before any work) or writing fails.
    """
    from gdmix.photon.folder import check_export_target

    check_export_target(folder, overwrite=overwrite)
    fastavro = fastavro_module()
    if isinstance(model, str | os.PathLike):
        model = _load(model, coordinates)
    names = [c.name for c in model.coordinates]
    if coordinates is not None:
        unknown = [n for n in coordinates if n not in names]
        if unknown:
            raise ConfigError(f"the model has no coordinate {unknown} (it has {names})")
        coords = [model[n] for n in coordinates]
    else:
        coords = [c for c in model.coordinates if c.kind in _LINEAR]
        left = [c.name for c in model.coordinates if c.kind not in _LINEAR]
        if left:
            logger.warning("Photon export: left out the coordinates %s (not linear)", left)
    if not coords:
        raise ConfigError(f"the model has no fixed or random coordinate to export ({names})")
    contents = [(c, linear_records(c)) for c in coords]  # every check before writing
    schema = fastavro.parse_schema(BAYESIAN_LINEAR_MODEL)
    notes = _notes(model, coords)

    def write(tmp: Path) -> None:
        for coord, records in contents:
            kind = FIXED_EFFECT if coord.kind == "fixed" else RANDOM_EFFECT
            target = tmp / kind / coord.name
            (target / COEFFICIENTS).mkdir(parents=True)
            ids = [coord.name] if coord.kind == "fixed" else [coord.config.entity, coord.name]
            (target / ID_INFO).write_text("\n".join(ids) + "\n", encoding="utf-8")
            with open(target / COEFFICIENTS / PART, "wb") as fo:
                fastavro.writer(fo, schema, records, codec="deflate")
        (tmp / NOTES).write_text(json.dumps(notes, indent=2), encoding="utf-8")

    path = write_export_folder(folder, write, overwrite=overwrite)
    logger.info(
        "exported %s to %s", ", ".join(f"{c.name} ({len(r)} models)" for c, r in contents), path
    )
    return path
