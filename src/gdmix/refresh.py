"""The refresh loop: the next version of a model from the current one and new data.

The paper's operating mode: the global model is retrained rarely; the per-entity models
are refreshed every few hours on the newest data, with the other coordinates frozen.
:func:`refresh` does one such step from nothing but the previous model (its manifest
holds the column roles and every coordinate's settings) and the new data:

- the coordinates not named are **frozen**: loaded from the previous model, scored, and
  saved as hard links to its files;
- the named random effects are retrained on the new data, in one of three modes:
  ``partial`` (refit from zero on the new data), ``warm`` (the same fit, started from the
  previous coefficients) or ``incremental`` (each entity's prior is its previous model,
  so the new data updates it instead of replacing it; needs variances);
- entities absent from the new data keep their previous model, and can be **expired**
  when they have had no rows for ``expire_after`` refreshes;
- with validation data, the parent and the new model are both evaluated on it, and a
  **guard** can refuse to promote a model that is worse than its parent by more than
  ``max_regression``;
- the manifest records the **lineage**: parent, mode, data (paths, rows, time range),
  metrics before and after, seconds.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from gdmix.config import GDMixConfig, coordinate_columns, parse_config
from gdmix.data.column_kinds import check_column_kinds
from gdmix.data.io import TableLike, read_table
from gdmix.data.roles import extract_roles
from gdmix.data.schema import check_not_empty, require_columns
from gdmix.effects.random_effect import RandomEffect, _zero_rows
from gdmix.errors import ConfigError, DataError, ModelDirectoryError
from gdmix.model import GDMixModel, model_path
from gdmix.model_dir import check_model_target, read_manifest
from gdmix.store import ModelStore, is_store
from gdmix.training import Callback
from gdmix.training import fit as train_model

__all__ = ["MODES", "RefreshResult", "refresh"]

logger = logging.getLogger("gdmix")

Mode = Literal["partial", "warm", "incremental"]
MODES: tuple[str, ...] = ("partial", "warm", "incremental")


@dataclass
class RefreshResult:
    """What :func:`refresh` produced.

    Attributes
    ----------
    model : GDMixModel
        The refreshed model (its ``lineage`` filled in).
    path : Path or None
        Where it was saved: the output folder or the store's new version folder.
    version : int or None
        Its number in the store (when published to one).
    promoted : bool
        Whether it became the store's current version (always False without a store).
    metrics_before, metrics_after : dict or None
        The parent's and the new model's metrics on the validation data.
    regression : float or None
        How much worse the new model is than its parent on the validation metric
        (positive: worse).
    refused : bool
        The guard refused to promote it.
    seconds : float
        Wall time of the refresh (reading, training, evaluating, saving).
    """

    model: GDMixModel
    path: Path | None
    version: int | None
    promoted: bool
    metrics_before: dict[str, float] | None
    metrics_after: dict[str, float] | None
    regression: float | None
    refused: bool
    seconds: float
    lineage: dict[str, Any] = field(default_factory=dict)


def _describe_data(
    frame: pd.DataFrame, source: TableLike, timestamp: str | None, where: str
) -> dict[str, Any]:
    info: dict[str, Any] = {"rows": len(frame)}
    if not isinstance(source, pd.DataFrame):
        info["path"] = os.fspath(source)
    if timestamp is not None:
        if timestamp not in frame.columns:
            raise DataError(f"{where}: timestamp column '{timestamp}' does not exist")
        ts = frame[timestamp]
        info["time_range"] = [_plain(ts.min()), _plain(ts.max())]
    return info


def _plain(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value.item() if isinstance(value, np.generic) else value


def _refresh_config(
    manifest: dict[str, Any],
    parent: Path,
    names: list[str],
    mode: str,
    training: dict[str, Any],
) -> GDMixConfig:
    """The training config of the refresh, built from the parent's manifest."""
    coords = []
    for entry in manifest["coordinates"]:
        cfg = dict(entry["config"])
        cfg["init_model"] = str(parent)
        if entry["name"] in names:
            cfg["locked"] = False
            cfg["incremental"] = mode == "incremental"
            cfg["warm_start"] = mode != "partial"
            if mode == "incremental" and cfg.get("variance", "none") == "none":
                raise ConfigError(
                    f"coordinate '{entry['name']}': an incremental refresh uses the previous "
                    "model's variances as its prior, and this model has none; refresh with "
                    "--mode warm or partial, or train with 'variance: simple'"
                )
        else:
            cfg["locked"] = True
        coords.append(cfg)
    return parse_config(
        {"data": manifest["data"], "coordinates": coords, "training": training},
        where=f"refresh of {parent}",
    )


def _expire(
    model: GDMixModel, names: list[str], frame: pd.DataFrame, expire_after: int | None
) -> dict[str, int]:
    """Age the entities without rows in ``frame`` by one refresh; drop those at the limit."""
    expired = {}
    for name in names:
        coord = model[name]
        assert isinstance(coord, RandomEffect)
        codes = coord._codes(frame[coord.config.entity])
        seen = np.zeros(len(coord.entity_ids), dtype=bool)
        seen[codes[codes >= 0]] = True
        age = coord.entity_age if len(coord.entity_age) == len(seen) else np.zeros(len(seen))
        coord.entity_age = np.where(seen, 0, age + 1).astype(np.int64)
        if expire_after is not None:
            doomed = coord.has_model & (coord.entity_age >= expire_after)
            gone = np.flatnonzero(doomed)
            coord.has_model = coord.has_model & ~doomed
            coord.coef = _zero_rows(coord.coef, gone)  # scores 0 now, as once reloaded
            coord.intercept[gone] = 0.0
            expired[name] = len(gone)
    return expired


def _check_window(
    config: GDMixConfig, manifest: dict[str, Any], frame: pd.DataFrame, where: str
) -> None:
    """The checks training would do, before any work: rows, columns, their kinds, roles
    (from the parent's manifest alone: its coefficient tables are not read here)."""
    check_not_empty(frame, where)
    columns: list[str] = []
    numeric: set[str] = set()
    for c in config.coordinates:
        columns += coordinate_columns(c)
        numeric |= set(c.features.numeric)
    if config.data.offset is not None:
        columns.append(config.data.offset)
    require_columns(frame, list(dict.fromkeys([*columns, config.data.label])), where)
    check_column_kinds(manifest.get("columns") or {}, frame, where, numeric=numeric)
    extract_roles(frame, config.data, where, need_label=True)


def _regression(before: dict[str, float], after: dict[str, float], metric: str) -> float:
    if metric == "auc":
        return float(before["auc"] - after["auc"])
    return float(after["log_loss"] - before["log_loss"])


def refresh(
    model: str | os.PathLike[str],
    data: TableLike,
    *,
    validation: TableLike | None = None,
    output: str | os.PathLike[str] | None = None,
    store: str | os.PathLike[str] | None = None,
    mode: Mode = "partial",
    coordinates: list[str] | None = None,
    n_passes: int = 1,
    expire_after: int | None = None,
    max_regression: float | None = None,
    metric: Literal["auc", "log_loss"] = "auc",
    timestamp_column: str | None = None,
    engine: Literal["local", "dask"] = "local",
    n_threads: int | None = None,
    progress: bool = False,
    overwrite: bool = False,
    trust_custom_code: bool = False,
    callbacks: list[Callback] | None = None,
) -> RefreshResult:
    """Refresh the random effects of a model on new data; save or publish the result.

    Parameters
    ----------
    model : path
        The previous model: a model directory, or a model store (its current version).
    data : DataFrame or path
        The new training data (same columns and kinds as the model's).
    validation : DataFrame or path, optional
        Evaluates the parent and the new model (and drives early stopping when
        ``n_passes > 1``); needed by ``max_regression``.
    output : path, optional
        Folder to save the new model to (see :meth:`GDMixModel.save`).
    store : path, optional
        Model store to publish the new model to as its next version (promoted to
        ``current`` unless the guard refuses). Default: ``model`` itself when it is a store
        and no ``output`` is given.
    mode : {"partial", "warm", "incremental"}
        How the named random effects are retrained (see the module's documentation).
    coordinates : list of str, optional
        The random effects to retrain; default every random effect. All others are frozen.
    n_passes : int
        Coordinate-descent passes over the retrained coordinates.
    expire_after : int, optional
        Drop entities that have had no rows for this many refreshes (this one included).
    max_regression : float, optional
        Refuse to promote when the new model's validation metric is worse than the
        parent's by more than this (AUC points, or log loss).
    metric : {"auc", "log_loss"}
        Validation metric of the guard and of early stopping.
    timestamp_column : str, optional
        Column whose range the lineage records as the data's time range.
    engine : {"local", "dask"}
        Where to train (the Dask engine takes the config's cluster settings: a
        ``LocalCluster`` by default).
    n_threads, progress, callbacks
        As for :func:`gdmix.fit`.
    overwrite, trust_custom_code
        As for :meth:`GDMixModel.save` and :meth:`GDMixModel.load`.

    Returns
    -------
    RefreshResult

    Raises
    ------
    GDMixError
        Bad input (an unknown coordinate, data that do not match the model, an empty
        window, an unusable output...), before any training where it can be found then.
    """
    start = time.perf_counter()
    if mode not in MODES:
        raise ConfigError(f"'mode' must be one of {MODES}. Got {mode!r} instead")
    if n_passes < 1:
        raise ConfigError(f"'n_passes' must be >= 1. Got {n_passes} instead")
    if expire_after is not None and expire_after < 1:
        raise ConfigError(f"'expire_after' must be >= 1. Got {expire_after} instead")
    if max_regression is not None and validation is None:
        raise ConfigError("'max_regression' compares metrics on validation data: pass it")
    if output is not None and store is not None:
        raise ConfigError("give 'output' (a model folder) or 'store', not both")
    parent_store = ModelStore(model) if is_store(model) else None
    parent = model_path(model)
    manifest = read_manifest(parent)
    if output is None and store is None:
        if parent_store is None:
            raise ConfigError("no destination: give 'output' (a folder) or 'store'")
        store = parent_store.root
    parent_version = parent_store.current() if parent_store is not None else None
    if output is not None:
        check_model_target(output, overwrite=overwrite)
    kinds = {e["name"]: e["config"].get("type") for e in manifest["coordinates"]}
    names = list(coordinates) if coordinates else [n for n, k in kinds.items() if k == "random"]
    unknown = [n for n in names if n not in kinds]
    if unknown:
        raise ConfigError(f"{parent} has no coordinate(s) {unknown} (it has {list(kinds)})")
    not_random = [n for n in names if kinds[n] != "random"]
    if not_random or not names:
        raise ConfigError(
            f"refresh retrains random effects; {not_random or 'none'} of {list(kinds)} "
            "given (retrain the whole model with gdmix train instead)"
        )
    training: dict[str, Any] = {"n_passes": n_passes, "progress": progress, "metric": metric,
                                "engine": engine, "n_threads": n_threads}  # fmt: skip
    config = _refresh_config(manifest, parent, names, mode, training)

    frame = read_table(data)
    _check_window(config, manifest, frame, "new data")
    val_frame = read_table(validation) if validation is not None else None
    before = None
    if val_frame is not None:
        _check_window(config, manifest, val_frame, "validation data")
        # The whole parent is loaded only to score the validation data.
        previous = GDMixModel.load(parent, trust_custom_code=trust_custom_code)
        before = previous.evaluate(val_frame, where="validation data")
        del previous

    logger.info("refreshing %s of %s (%s, %d rows)", names, parent, mode, len(frame))
    new = train_model(config, frame, val_frame, callbacks=callbacks,
                      trust_custom_code=trust_custom_code)  # fmt: skip
    expired = _expire(new, names, frame, expire_after)
    after = new.evaluate(val_frame, where="validation data") if val_frame is not None else None
    regression = _regression(before, after, metric) if before and after else None
    refused = max_regression is not None and regression is not None and regression > max_regression

    lineage: dict[str, Any] = {
        "mode": mode,
        "parent": {
            "path": str(parent),
            "version": parent_version,
            "created_utc": manifest.get("created_utc"),
        },
        "refreshed": names,
        "frozen": [n for n in kinds if n not in names],
        "data": {"train": _describe_data(frame, data, timestamp_column, "new data")},
        "expired_entities": expired,
        "expire_after": expire_after,
        "metrics_before": _summary(before),
        "metrics_after": _summary(after),
        "regression": regression,
        "max_regression": max_regression,
        "guard": "refused" if refused else ("passed" if max_regression is not None else "off"),
        "generation": int((manifest.get("lineage") or {}).get("generation", 0)) + 1,
    }
    if val_frame is not None:
        assert validation is not None
        lineage["data"]["validation"] = _describe_data(
            val_frame, validation, timestamp_column, "validation data"
        )
    new.lineage = lineage
    path, version, promoted = None, None, False
    if store is not None:
        target_store = ModelStore(store)

        def write(folder: Path) -> None:
            new.lineage["seconds"] = time.perf_counter() - start
            new.write_into(folder)

        version = target_store.publish(write, promote=False)
        path = target_store.path(version)
        if not refused:
            target_store.promote(version, reason=f"refresh ({mode})")
            promoted = True
    else:
        assert output is not None
        new.lineage["seconds"] = time.perf_counter() - start
        path = new.save(output, overwrite=overwrite)
    if refused:
        logger.warning(
            "refusing to promote the refreshed model: validation %s %.5f is %.5f worse than "
            "its parent's %.5f (max_regression %g)%s",
            metric, after[metric] if after else float("nan"), regression,
            before[metric] if before else float("nan"), max_regression,
            f"; it stays in the store as version {version}" if version else "",
        )  # fmt: skip
    return RefreshResult(new, path, version, promoted, before, after, regression, refused,
                         time.perf_counter() - start, new.lineage)  # fmt: skip


def _summary(metrics: dict[str, float] | None) -> dict[str, float] | None:
    if metrics is None:
        return None
    keep = ("auc", "log_loss", "n_rows")
    out = {k: metrics[k] for k in keep if k in metrics}
    out.update({k: v for k, v in metrics.items() if k.startswith("coverage@")})
    return out


def parent_of(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The lineage's parent entry of the model at ``path`` (None for a trained model)."""
    try:
        lineage = read_manifest(model_path(path)).get("lineage") or {}
    except ModelDirectoryError:
        return None
    return lineage.get("parent")
