"""A final refit on all labelled data with what validation chose.

Validation data chooses: the ``l2`` of every coordinate (from a list of values), the
number of coordinate-descent passes (the best pass), and, within each pass, a GBDT
coordinate's number of trees and a deep coordinate's number of epochs (early stopping).
The usual last step trains once more on the training and validation data together with
those choices fixed and no validation set. :func:`refit` does it from the model itself:

- every coordinate keeps its config, with ``l2`` (and a random effect's
  ``intercept_l2``) set to the selected value. A prior estimated from the data
  (``l2: auto``) is estimated again on the refit's data: the estimate is part of the
  fit, not a choice made on validation;
- ``training.n_passes`` is the source model's best pass (without validation data: the
  passes it ran), and ``training.tol`` is 0, so that every pass runs;
- a GBDT coordinate grows, in pass ``p``, the trees the source kept in pass ``p``; a deep
  coordinate trains, in pass ``p``, the source's best epoch of pass ``p``.

For linear models the refit is exactly ``gdmix.fit`` with the config of
:func:`refit_plan` (any engine); GBDT and deep coordinates, whose settings change pass by
pass, train on the local engine. The refit model's lineage (``mode: refit``) records the
source model's choices and validation metrics.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from gdmix.config import GDMixConfig, TrainingConfig
from gdmix.data.io import TableLike, check_table_type, read_table
from gdmix.data.matrices import MatrixInput
from gdmix.errors import ConfigError
from gdmix.model import GDMixModel
from gdmix.training import Callback, _Trainer, fit, table_matrices

__all__ = ["RefitPlan", "refit", "refit_plan"]


@dataclass
class RefitPlan:
    """What a refit trains.

    Attributes
    ----------
    config : GDMixConfig
        The source model's coordinates with the selected hyper-parameters, its column
        roles (no data paths), and ``training`` with ``n_passes`` the pass count and
        ``tol`` 0.
    schedule : dict of str to list of dict
        Per GBDT or deep coordinate, the settings of each pass (``n_estimators``,
        ``max_epochs``) on top of its config.
    source : dict
        The source model's choices and metrics, recorded in the refit's lineage.
    """

    config: GDMixConfig
    schedule: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)


def _runs(history: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The history cut into coordinate-descent runs (one per grid point of an
    ``l2_search: grid``; a single run otherwise)."""
    runs: list[list[dict[str, Any]]] = []
    seen: set[tuple[Any, ...]] = set()
    for record in history:
        key = (record.get("pass"), record.get("coordinate"), record.get("candidate", 0))
        if not runs or key in seen:
            runs.append([])
            seen = set()
        seen.add(key)
        runs[-1].append(record)
    return runs


def _pass_count(model: GDMixModel) -> int:
    metrics = model.metrics
    for value in (metrics.get("best_pass"), (metrics.get("stopped") or {}).get("pass")):
        if isinstance(value, int) and value >= 1:
            return value
    passes = [r.get("pass") for r in model.history if isinstance(r.get("pass"), int)]
    return max(passes, default=1)


def _selected(run: list[dict[str, Any]], name: str, n_passes: int) -> list[dict[str, Any]]:
    """The kept record of coordinate ``name`` in each pass up to ``n_passes``."""
    out = {}
    for r in run:
        if r.get("coordinate") == name and r.get("selected", True) and r["pass"] <= n_passes:
            out[r["pass"]] = r
    return [out[p] for p in sorted(out)]


def _winning_run(model: GDMixModel, n_passes: int) -> list[dict[str, Any]]:
    """The run whose kept records at the last pass have the model's final parameters."""
    runs = _runs(model.history)
    final = model.metrics.get("params") or {c.name: c.params for c in model.coordinates}
    for run in reversed(runs):
        ok = True
        for name, params in final.items():
            kept = _selected(run, name, n_passes)
            if kept and kept[-1].get("params") != params:
                ok = False
        if ok:
            return run
    return runs[-1] if runs else []


def _coordinate_config(coord: Any, params: dict[str, Any]) -> Any:
    config = coord.config
    if config.locked:
        return config
    if coord.kind == "random":
        if config.estimates_prior():
            return config
        update = {"l2": params["l2"], "intercept_l2": params.get("intercept_l2")}
        return config.model_copy(update=update)
    if "l2" in params:
        return config.model_copy(update={"l2": params["l2"]})
    return config


def refit_plan(model: GDMixModel, *, training: TrainingConfig | None = None) -> RefitPlan:
    """The config (and per-pass schedule) of a refit of ``model``.

    Parameters
    ----------
    model : GDMixModel
        A trained model (with its ``metrics`` and ``history``).
    training : TrainingConfig, optional
        Settings to keep (threads, progress, metrics, engine...); ``n_passes`` and
        ``tol`` are replaced.

    Returns
    -------
    RefitPlan
    """
    if not isinstance(model, GDMixModel):
        raise TypeError(f"model must be a GDMixModel or a model path. Got {type(model).__name__}")
    n_passes = _pass_count(model)
    final = model.metrics.get("params") or {}
    coordinates = [_coordinate_config(c, final.get(c.name, c.params)) for c in model.coordinates]
    run = _winning_run(model, n_passes)
    schedule: dict[str, list[dict[str, Any]]] = {}
    for c in model.coordinates:
        if c.config.locked:
            continue
        kept = _selected(run, c.name, n_passes)
        if c.kind == "gbdt" and kept:
            schedule[c.name] = [{"n_estimators": int(r["n_trees"])} for r in kept]
        elif c.kind == "deep" and kept:
            schedule[c.name] = [
                {"max_epochs": int(r.get("best_epoch", r.get("epochs", 0)) or 0)} for r in kept
            ]
    base = training if training is not None else TrainingConfig(progress=False)
    tc = base.model_copy(update={"n_passes": n_passes, "tol": 0.0})
    data = model.data.model_copy(update={"train": None, "validation": None, "test": None})
    config = GDMixConfig(data=data, coordinates=coordinates, training=tc)
    source: dict[str, Any] = {
        "params": final,
        "passes": n_passes,
        "best_pass": model.metrics.get("best_pass"),
        "schedule": schedule,
        "metrics": {k: model.metrics[k] for k in ("train", "validation") if k in model.metrics},
    }
    if model.path is not None:
        source["path"] = str(model.path)
    if model.lineage:
        source["lineage"] = {
            k: model.lineage[k] for k in ("mode", "generation") if k in model.lineage
        }
    return RefitPlan(config, schedule, source)


def _read_parts(data: Any, what: str) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    parts = list(data) if isinstance(data, list | tuple) else [data]
    if not parts:
        raise ConfigError(f"{what}: an empty list of tables")
    frames, entries = [], []
    for part in parts:
        check_table_type(part, what)
        frame = read_table(part)
        frames.append(frame)
        entry: dict[str, Any] = {"rows": len(frame)}
        if isinstance(part, str | os.PathLike):
            entry["path"] = str(part)
        entries.append(entry)
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    return frame, entries


def _source_names(model: GDMixModel, features: dict[str, Any]) -> dict[str, list[str]]:
    """The source model's matrix column names of the coordinates in ``features`` given
    as matrices without names of their own (not DataFrames)."""
    out = {}
    for c in model.coordinates:
        names = getattr(c.features, "matrix", None)
        value = features.get(c.name)
        parts = value if isinstance(value, list | tuple) else [value]
        if names and value is not None and not any(isinstance(p, pd.DataFrame) for p in parts):
            out[c.name] = list(names)
    return out


def refit(
    model: GDMixModel | str | os.PathLike[str],
    data: TableLike | Sequence[TableLike] | None = None,
    *,
    features: dict[str, MatrixInput] | None = None,
    feature_names: dict[str, list[str]] | None = None,
    training: TrainingConfig | None = None,
    callbacks: list[Callback] | None = None,
    trust_custom_code: bool = False,
) -> GDMixModel:
    """Train ``model`` again on ``data`` with the hyper-parameters, pass count, tree
    counts and epochs that validation chose (see :mod:`gdmix.refit`), without validation.

    Parameters
    ----------
    model : GDMixModel or path
        The source model, trained with validation data (or a model directory / store).
    data : table or list of tables, optional
        The labelled data (DataFrames, pyarrow Tables or paths; a list is taken as the
        rows of each table one after the other). Default: the source config's training
        and validation files.
    features : dict of str to matrix or list of matrices, optional
        Feature matrices of the coordinates trained on one (see :func:`gdmix.fit`); a
        list holds one matrix per table of ``data``, in order.
    feature_names : dict of str to list of str, optional
        Their column names (see :func:`gdmix.fit`); by default the source model's, the
        matrices' columns then being in the source's order (a DataFrame's own names are
        used as they are).
    training : TrainingConfig, optional
        Training settings to use (threads, progress, engine...); ``n_passes`` and ``tol``
        come from the plan.
    callbacks : list of callables, optional
        As for :func:`gdmix.fit`.
    trust_custom_code : bool
        As for :func:`gdmix.fit` (and for loading ``model`` from a path).

    Returns
    -------
    GDMixModel
        The refit model; ``lineage["mode"]`` is ``"refit"`` and ``lineage["source"]`` the
        source model's choices and metrics.

    Raises
    ------
    GDMixError
        On bad data or configuration, before training starts.
    """
    if isinstance(model, str | os.PathLike):
        model = GDMixModel.load(model, trust_custom_code=trust_custom_code)
    plan = refit_plan(model, training=training)
    if data is None:
        paths = [p for p in (model.data.train, model.data.validation) if p is not None]
        if not paths:
            raise ConfigError("refit: no data given, and the source model names no data files")
        data = paths
    frame, entries = _read_parts(data, "data")
    if feature_names is None and isinstance(features, dict):
        feature_names = _source_names(model, features)
    start = time.perf_counter()
    if plan.schedule:
        if plan.config.training.engine != "local":
            raise ConfigError(
                f"refit: GBDT and deep coordinates ({sorted(plan.schedule)}) change settings "
                "pass by pass; that needs training.engine: local"
            )
        matrices, _ = table_matrices(plan.config, frame, None, features, None, feature_names)
        trainer = _Trainer(
            plan.config, frame, None, list(callbacks or []), trust_custom_code,
            matrices=matrices, schedule=plan.schedule,
        )  # fmt: skip
        refit_model = trainer.run()
    else:
        refit_model = fit(
            plan.config, frame, features=features, feature_names=feature_names,
            callbacks=callbacks, trust_custom_code=trust_custom_code,
        )  # fmt: skip
    refit_model.lineage = {
        "mode": "refit",
        "data": {"train": {"rows": len(frame), "parts": entries}},
        "generation": 0,
        "seconds": time.perf_counter() - start,
        "source": plan.source,
    }
    return refit_model
