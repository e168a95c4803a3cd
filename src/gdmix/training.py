"""Block coordinate descent over the coordinates of a GDMix model (Algorithm 1).

Score bookkeeping (the paper's Eq. 8-11): every table keeps one score vector per
coordinate, row-aligned, and ``total = offset + sum of scores``. Training
coordinate ``c`` uses ``total - score_c`` as its offset; afterwards ``score_c`` is
replaced and the total follows. Locked coordinates are scored once and never
trained. Lists of ``l2`` values are searched on the validation metric, warm-started
along the path from the strongest penalty to the weakest.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from gdmix.array_kernels import max_abs, sum_in_order
from gdmix.config import GDMixConfig, coordinate_columns
from gdmix.data.column_kinds import check_column_kinds, column_kinds
from gdmix.data.io import TableLike, check_table_type, read_table
from gdmix.data.matrices import FeatureMatrix, MatrixInput, feature_matrices
from gdmix.data.roles import RoleColumns, extract_roles
from gdmix.data.schema import shared_finite_checks
from gdmix.effects.base import Coordinate, Validation
from gdmix.effects.prior_estimation import fit_with_estimated_prior, others_terms
from gdmix.errors import ConfigError
from gdmix.history import finish_record, new_record
from gdmix.model import GDMixModel, load_saved_coordinate, make_coordinate
from gdmix.solvers.jit_cache import announce_compilation
from gdmix.task_metrics import (
    AUTO_TRAIN_METRICS_MAX_ROWS,
    SORTED_METRICS,
    TaskEvaluator,
    evaluated_names,
    loss_sum,
)
from gdmix.tasks import goodness as metric_goodness

__all__ = ["Callback", "fit", "log_callback"]

logger = logging.getLogger("gdmix")

Callback = Callable[[dict[str, Any]], None]


@dataclass
class _Table:
    """A table prepared for training: role columns, designs and per-coordinate scores.

    Its labels and weights never change, so their class split is made once
    (:class:`gdmix.metrics.BinaryEvaluator`) and each evaluation sorts the scores only.
    The total score and its metrics are kept until a score array is replaced (scores
    are replaced, never changed in place).
    """

    name: str
    roles: RoleColumns
    designs: dict[str, Any]
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    #: The model's task and the selection metric (``training.metric``).
    task: str = "logistic"
    metric: str | None = None
    _evaluator: TaskEvaluator | None = field(default=None, repr=False)
    _current: tuple[list[tuple[str, np.ndarray]], dict[str, float]] | None = field(
        default=None, repr=False
    )
    _total: tuple[list[tuple[str, np.ndarray]], np.ndarray] | None = field(default=None, repr=False)
    _loss: tuple[list[tuple[str, np.ndarray]], float] | None = field(default=None, repr=False)
    #: The all-zero score arrays of coordinates not fitted yet (left out of sums).
    zero_scores: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    #: ``training.train_metrics: auto`` evaluates the training table after every
    #: coordinate update when it has at most this many rows.
    AUTO_METRICS_MAX_ROWS: ClassVar[int] = AUTO_TRAIN_METRICS_MAX_ROWS

    def _unchanged(self, seen: list[tuple[str, np.ndarray]]) -> bool:
        """Whether ``scores`` still holds exactly the arrays ``seen`` (none replaced)."""
        current = self.scores
        return len(seen) == len(current) and all(
            name in current and current[name] is array for name, array in seen
        )

    def total(self) -> np.ndarray:
        """``offset`` plus every coordinate's scores: read-only, computed again only after a
        score array is replaced."""
        if self._total is not None and self._unchanged(self._total[0]):
            return self._total[1]
        out = self._sum()
        out.flags.writeable = False
        self._total = (list(self.scores.items()), out)  # holds the arrays: no reused ids
        return out

    def offsets_for(self, name: str) -> np.ndarray:
        """``offset`` plus the scores of every coordinate but ``name``: what coordinate
        ``name`` is fitted against (a new array; writeable, as the compiled kernels are
        specialised for writeable arrays)."""
        return self._sum(exclude=name)

    def _sum(self, exclude: str | None = None) -> np.ndarray:
        """``offset`` plus the scores of every coordinate but ``exclude``, added in the
        coordinates' order on all threads; the zeros of coordinates not fitted yet, and
        the offset when the table has none, are left out (one pass fewer each, the same
        values)."""
        parts = [
            s for k, s in self.scores.items() if k != exclude and self.zero_scores.get(k) is not s
        ]
        if not parts and self.roles.no_offset:
            return np.zeros_like(self.roles.offset)
        if not self.roles.no_offset:
            parts = [self.roles.offset, *parts]
        return sum_in_order(parts)

    def metrics(self, total: np.ndarray | None = None) -> dict[str, float]:
        """The task's metrics of ``total`` (default: the table's current total score):
        AUC and log loss (logistic), RMSE (linear), Poisson deviance and RMSE (Poisson),
        and the selection metric.

        The current total's metrics are kept until a score array is replaced, so that
        the end-of-pass and final evaluations of unchanged scores cost nothing.
        """
        assert self.roles.y is not None
        if self._evaluator is None:
            self._evaluator = TaskEvaluator(self.roles.y, self.roles.weight, self.task,
                                            self.metric)  # fmt: skip
        if total is None and self._current is not None and self._unchanged(self._current[0]):
            return dict(self._current[1])
        t = self.total() if total is None else total
        values = self._evaluator.evaluate(t)
        if total is None:
            self._current = (list(self.scores.items()), dict(values))
        return values

    def loss_sum(self) -> float:
        """The task's weighted loss of the current total score (kept until a score array
        is replaced)."""
        assert self.roles.y is not None
        if self._loss is not None and self._unchanged(self._loss[0]):
            return self._loss[1]
        untrained = all(self.zero_scores.get(k) is s for k, s in self.scores.items())
        if self.task == "logistic" and self.roles.no_offset and untrained:
            value = math.log(2.0) * float(self.roles.weight.sum())  # every margin is 0
        else:
            value = loss_sum(self.task, self.roles.y, self.total(), self.roles.weight)
        self._loss = (list(self.scores.items()), value)
        return value

    def final_metrics(self, setting: str) -> dict[str, float | None]:
        """The metrics recorded in the model: all of :meth:`metrics` when
        ``training.train_metrics`` asks for this table's metrics after each update;
        otherwise those that need no sort of the rows (log loss, RMSE, deviance), with
        ``None`` for the sorted ones (AUC, AUPR)."""
        if self.metrics_each_update(setting):
            return self.metrics()
        assert self.roles.y is not None
        values: dict[str, float | None] = dict.fromkeys(evaluated_names(self.task, self.metric))
        rest = tuple(n for n in values if n not in SORTED_METRICS and n != "log_loss")
        if rest:
            evaluator = TaskEvaluator(self.roles.y, self.roles.weight, self.task, names=rest)
            values.update(evaluator.evaluate(self.total()))
        if "log_loss" in values:  # the objective's loss, already summed
            values["log_loss"] = self.loss_sum() / max(float(self.roles.weight.sum()), 1e-300)
        return values

    def metrics_each_update(self, setting: str) -> bool:
        """Whether ``training.train_metrics`` asks for this table's metrics after every
        coordinate update (``auto``: on tables of at most ``AUTO_METRICS_MAX_ROWS``)."""
        if setting == "auto":
            return len(self.roles.offset) <= self.AUTO_METRICS_MAX_ROWS
        return setting == "always"


def log_callback(record: dict[str, Any]) -> None:
    """Callback that logs one line per coordinate update (logger ``gdmix``, INFO)."""
    parts = [f"pass {record['pass']}", record["coordinate"]]
    for k, v in record["params"].items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            parts.append(f"{k}={v:g}")
        elif isinstance(v, list):  # one value per feature
            parts.append(f"{k}=[{', '.join(f'{x:.3g}' for x in v)}]")
    keys = ("train_auc", "validation_auc", "validation_log_loss", "validation_aupr",
            "train_rmse", "validation_rmse", "validation_poisson_deviance")  # fmt: skip
    for key in keys:
        if record.get(key) is not None:
            parts.append(f"{key}={record[key]:.4f}")
    parts.append(f"{record['seconds']:.2f}s")
    logger.info("  ".join(parts))


class _Trainer:
    def __init__(
        self,
        config: GDMixConfig,
        train: pd.DataFrame,
        validation: pd.DataFrame | None,
        callbacks: list[Callback],
        trust_custom_code: bool = False,
        *,
        matrices: dict[str, FeatureMatrix] | None = None,
        validation_matrices: dict[str, FeatureMatrix] | None = None,
        schedule: dict[str, list[dict[str, Any]]] | None = None,
    ) -> None:
        self.config = config
        self.callbacks = callbacks
        self.stopped: dict[str, Any] = {}
        #: Per coordinate, settings that change pass by pass (a refit's epochs or trees).
        self.schedule = dict(schedule or {})
        matrices = dict(matrices or {})
        tc = config.training
        roles = extract_roles(train, config.data, "training data", need_label=True)
        self.coords: list[Coordinate] = []
        self.locked: set[str] = set()
        for cc in config.coordinates:
            given = {"matrix": matrices[cc.name]} if cc.name in matrices else {}
            if given and cc.type not in ("fixed", "random"):
                raise ConfigError(
                    f"coordinate '{cc.name}': feature matrices feed fixed and random "
                    f"coordinates; a {cc.type} coordinate reads its features from the table"
                )
            if cc.locked:
                coord = load_saved_coordinate(cc, trust_custom_code=trust_custom_code)
                self.locked.add(cc.name)
            elif cc.init_model is not None:
                # Warm start (and, for incremental random effects, the prior).
                if cc.type not in ("fixed", "random"):
                    raise ConfigError(
                        f"coordinate '{cc.name}': 'init_model' without 'locked' (a warm start) "
                        f"is supported for fixed and random coordinates, not '{cc.type}'"
                    )
                coord = make_coordinate(cc)
                coord.build(
                    train, base=load_saved_coordinate(cc, trust_custom_code=trust_custom_code)
                )
            else:
                coord = make_coordinate(cc)
                coord.build(train, **given)
            if hasattr(coord, "n_threads"):
                coord.n_threads = tc.n_threads
                coord.progress_factory = _progress_factory(tc.progress)
            self.coords.append(coord)
        self.train = self._prepare("training data", train, roles, training=True, matrices=matrices)
        feature_columns = [
            col for cc in config.coordinates for col in coordinate_columns(cc, entity=False)
        ]
        self.column_kinds = column_kinds(train, list(dict.fromkeys(feature_columns)))
        self.validation = None
        if validation is not None:
            numeric = {col for cc in config.coordinates for col in cc.features.numeric}
            check_column_kinds(self.column_kinds, validation, "validation data", numeric=numeric)
            vroles = extract_roles(validation, config.data, "validation data", need_label=True)
            self.validation = self._prepare(
                "validation data", validation, vroles, training=False,
                matrices=dict(validation_matrices or {}),
            )  # fmt: skip
        self.history: list[dict[str, Any]] = []
        self.best_pass = 0
        self._base_configs: dict[str, Any] = {}

    def _prepare(
        self,
        name: str,
        frame: pd.DataFrame,
        roles: RoleColumns,
        training: bool,
        matrices: dict[str, FeatureMatrix],
    ) -> _Table:
        designs = {}
        for c in self.coords:
            trainable = training and c.name not in self.locked
            given = {"matrix": matrices[c.name]} if c.name in matrices else {}
            designs[c.name] = c.design(frame, name, training=trainable, **given)
        table = _Table(name, roles, designs, task=self.config.task,
                       metric=self.config.training.metric)  # fmt: skip
        for c in self.coords:
            if c.fitted:
                table.scores[c.name] = c.score(designs[c.name])
            else:
                table.scores[c.name] = table.zero_scores[c.name] = np.zeros(len(roles.offset))
        return table

    def _tables(self) -> list[_Table]:
        return [self.train] + ([self.validation] if self.validation is not None else [])

    def _selection_metrics(self) -> dict[str, float]:
        table = self.validation if self.validation is not None else self.train
        return table.metrics()

    def _update(self, coord: Coordinate, pass_no: int, candidates: list[dict[str, Any]]) -> None:
        """Fit one coordinate (for each candidate) and keep the best on validation."""
        metric = self.config.training.metric
        offsets = {t.name: t.offsets_for(coord.name) for t in self._tables()}
        validation = None
        if self.validation is not None:
            v = self.validation
            assert v.roles.y is not None
            validation = Validation(
                v.designs[coord.name], v.roles.y, v.roles.weight, offsets[v.name]
            )
        selection = self.validation if self.validation is not None else self.train
        # Training-set metrics (a sort of every training row) only when asked for
        # (training.train_metrics; without validation data only to choose among several
        # candidates), and only for the kept candidate when validation data chooses.
        train_metrics = self.train.metrics_each_update(self.config.training.train_metrics)
        deferred = self.validation is not None and len(candidates) > 1
        choose_on_train = selection is self.train and len(candidates) > 1
        skip_train = deferred or not (train_metrics or choose_on_train)
        best: tuple[float, dict[str, Any], dict[str, np.ndarray], dict[str, Any]] | None = None
        records: list[dict[str, Any]] = []
        if coord.kind in ("fixed", "random"):  # every input check has passed by now
            announce_compilation()
        for candidate, params in enumerate(candidates):
            start = time.perf_counter()
            if "auto" in params.values():  # the prior is estimated, not searched
                t = self.train
                others = others_terms(
                    self.coords, t.designs, t.roles.y, t.roles.weight, offsets[t.name],
                    t.scores, coord.name,
                )  # fmt: skip
                diag = fit_with_estimated_prior(
                    coord, t.designs[coord.name], t.roles.y, t.roles.weight, offsets[t.name],
                    params, others=others,
                )  # fmt: skip
                params = dict(coord.params)
            else:
                diag = coord.fit(
                    self.train.designs[coord.name],
                    self.train.roles.y,
                    self.train.roles.weight,
                    offsets[self.train.name],
                    validation=validation,
                    **params,
                )
            seconds = time.perf_counter() - start
            new_scores = {t.name: coord.score(t.designs[coord.name]) for t in self._tables()}
            record = new_record(pass_no, coord, params, candidate)
            goodness = -np.inf
            for t in self._tables():
                if skip_train and t is self.train:
                    continue
                m = t.metrics(offsets[t.name] + new_scores[t.name])
                prefix = "train" if t is self.train else "validation"
                record.update({f"{prefix}_{k}": v for k, v in m.items()})
                if t is selection:
                    goodness = metric_goodness(m, metric)
            record.update(seconds=seconds, **diag)
            _check_convergence(coord, record, new_scores[self.train.name])
            finish_record(record)
            self.history.append(record)
            records.append(record)
            for cb in self.callbacks:
                cb(record)
            if best is None or goodness > best[0]:
                state = coord.get_state() if len(candidates) > 1 else {}
                best = (goodness, state, new_scores, record)
        assert best is not None
        for r in records:
            r["selected"] = r is best[3]
        if len(candidates) > 1:
            coord.set_state(best[1])
            logger.info("  %s: selected %s", coord.name, coord.params)
        if deferred and train_metrics:
            m = self.train.metrics(offsets[self.train.name] + best[2][self.train.name])
            best[3].update({f"train_{k}": v for k, v in m.items()})
        for t in self._tables():
            t.scores[coord.name] = best[2][t.name]

    def _run_passes(self, grid_of: Callable[[Coordinate], list[dict[str, Any]]]) -> float:
        """Coordinate descent passes; returns the goodness of the model kept.

        With validation data the model after the best pass is kept, and (if enabled)
        training stops after a pass that does not improve the metric by ``min_delta``.
        Without validation data, passes run until one changes the training objective by
        less than ``training.tol`` (relative), and the last model is kept.
        """
        tc = self.config.training
        best_goodness = -np.inf
        best_snapshot: list[Any] | None = None
        objective = self._objective() if self.validation is None else 0.0
        self.stopped = {"reason": "n_passes", "pass": tc.n_passes}
        for pass_no in range(1, tc.n_passes + 1):
            for coord in self.coords:
                if coord.name not in self.locked:
                    self._scheduled(coord, pass_no)
                    self._update(coord, pass_no, grid_of(coord))
            if self.validation is None:  # the last pass's model is kept: nothing to select
                previous, objective = objective, self._objective()
                change = abs(previous - objective) / max(abs(objective), 1e-300)
                self.history[-1]["objective_change"] = change
                if pass_no < tc.n_passes and change < tc.tol:
                    logger.info(
                        "pass %d changed the training objective by %.2e (< tol %.0e); stopping",
                        pass_no, change, tc.tol,
                    )  # fmt: skip
                    self.stopped = {"reason": "tol", "pass": pass_no, "objective_change": change}
                    break
                continue
            goodness = metric_goodness(self._selection_metrics(), tc.metric)
            if goodness > best_goodness + tc.min_delta:
                best_goodness, self.best_pass = goodness, pass_no
                best_snapshot = self._snapshot()
            elif tc.early_stopping:
                logger.info("pass %d did not improve validation %s; stopping", pass_no, tc.metric)
                self.stopped = {"reason": "early_stopping", "pass": pass_no}
                break
        if best_snapshot is not None:
            self._restore(best_snapshot)
        return best_goodness

    def _scheduled(self, coord: Coordinate, pass_no: int) -> None:
        """Give ``coord`` this pass's settings from :attr:`schedule` (e.g. a deep
        coordinate's epochs), on top of its own config."""
        steps = self.schedule.get(coord.name)
        if steps:
            base = self._base_configs.setdefault(coord.name, coord.config)
            coord.config = base.model_copy(update=steps[min(pass_no, len(steps)) - 1])

    def _objective(self) -> float:
        """Training objective: the task's weighted loss of the total plus every penalty."""
        t = self.train
        assert t.roles.y is not None
        return t.loss_sum() + sum(c.penalty() for c in self.coords)

    def _snapshot(self) -> list[Any]:
        states = {c.name: c.get_state() for c in self.coords if c.name not in self.locked}
        scores = [{k: v.copy() for k, v in t.scores.items()} for t in self._tables()]
        return [states, scores]

    def _restore(self, snapshot: list[Any]) -> None:
        states, scores = snapshot
        for c in self.coords:
            if c.name in states:
                c.set_state(states[c.name])
        for t, s in zip(self._tables(), scores, strict=True):
            t.scores = {k: v.copy() for k, v in s.items()}

    def run(self) -> GDMixModel:
        tc = self.config.training
        trainable = [c for c in self.coords if c.name not in self.locked]
        searching = any(len(c.config.search_grid()) > 1 for c in trainable)
        if searching and self.validation is None:
            raise ConfigError(
                "a list of l2 values needs validation data to choose from: set 'data.validation'"
            )
        if tc.l2_search == "coordinate" or not searching:
            self._run_passes(lambda c: c.config.search_grid())
        else:
            grids = [c.config.search_grid() for c in trainable]
            best: tuple[float, list[Any], int] | None = None
            for combo in itertools.product(*grids):
                chosen = dict(zip([c.name for c in trainable], combo, strict=True))
                logger.info("grid point %s", chosen)
                goodness = self._run_passes(lambda c, chosen=chosen: [chosen[c.name]])
                if best is None or goodness > best[0]:
                    best = (goodness, self._snapshot(), self.best_pass)
            assert best is not None
            self._restore(best[1])
            self.best_pass = best[2]
        for c in self.coords:  # a schedule's last step is not the coordinate's config
            c.config = self._base_configs.get(c.name, c.config)
        metrics: dict[str, Any] = {"train": self.train.final_metrics(tc.train_metrics)}
        if self.validation is not None:
            metrics["validation"] = self.validation.metrics()
        metrics["params"] = {c.name: c.params for c in self.coords}
        if self.validation is not None:
            metrics["best_pass"] = self.best_pass
        metrics["stopped"] = self.stopped
        return GDMixModel(
            self.coords,
            self.config.data,
            metrics=metrics,
            history=self.history,
            column_kinds=self.column_kinds,
        )


#: A coordinate whose scores reach this size (a probability within 1e-15 of 0 or 1) is
#: running off, as on separable data with a negligible penalty.
RUNAWAY_LOGIT = 35.0
#: The same for a coordinate with no penalty at all (``l2: 0``), whose solver stops when
#: the gradient vanishes at large margins (probabilities within 3e-7 of 0 or 1) instead
#: of at an optimum that does not exist.
RUNAWAY_LOGIT_UNPENALISED = 15.0


def _unpenalised(coord: Coordinate, params: dict[str, Any]) -> bool:
    if coord.kind not in ("fixed", "random"):
        return False
    values = [params.get("l2")]
    if coord.kind == "random" and coord.config.intercept:
        values.append(params.get("intercept_l2", params.get("l2")))
    return any(v is not None and np.ndim(v) == 0 and float(v) == 0.0 for v in values)


def _check_convergence(coord: Coordinate, record: dict[str, Any], scores: np.ndarray) -> None:
    """Mark in ``record`` and log when a fit did not converge or its scores run off."""
    largest = max_abs(scores)
    record["max_abs_score"] = largest
    params = record["params"]
    if params.get("intercept_l2", 0) is None:
        params = {**params, "intercept_l2": params.get("l2")}
    limit = RUNAWAY_LOGIT_UNPENALISED if _unpenalised(coord, params) else RUNAWAY_LOGIT
    if largest > limit:
        record["converged"] = False
        record["diverged"] = True
        logger.warning(
            "coordinate '%s': scores reach %.3g (probabilities of exactly 0 or 1): its "
            "coefficients are running off, as on separable data without a penalty. Not "
            "converged; raise l2 (now %s)",
            coord.name, largest, record["params"].get("l2"),
        )  # fmt: skip
        return
    if record.get("converged") is False:
        logger.warning(
            "coordinate '%s' did not converge (%s iterations); raise max_iter or l2",
            coord.name, record.get("n_iter", "?"),
        )  # fmt: skip
    n_entities, n_ok = record.get("n_entities"), record.get("n_converged")
    if isinstance(n_entities, int) and isinstance(n_ok, int) and n_ok < n_entities:
        record["converged"] = False
        logger.warning(
            "coordinate '%s': %d of %d entities did not converge within max_iter",
            coord.name, n_entities - n_ok, n_entities,
        )  # fmt: skip
    elif isinstance(n_entities, int):
        record.setdefault("converged", True)


def _progress_factory(enabled: bool) -> Callable[..., Any] | None:
    if not enabled:
        return None

    def make(total: int, desc: str) -> Any:
        from tqdm.auto import tqdm  # imported when a bar is shown (asyncio comes with it)

        return tqdm(total=total, desc=desc, unit="entity", leave=False, disable=None)

    return make


def fit(
    config: GDMixConfig,
    train: TableLike | None = None,
    validation: TableLike | None = None,
    *,
    features: dict[str, MatrixInput] | None = None,
    validation_features: dict[str, MatrixInput] | None = None,
    feature_names: dict[str, list[str]] | None = None,
    callbacks: list[Callback] | None = None,
    trust_custom_code: bool = False,
) -> GDMixModel:
    """Train a GDMix model by block coordinate descent.

    Parameters
    ----------
    config : GDMixConfig
        Column roles, coordinates (in update order) and training settings.
    train, validation : DataFrame, pyarrow Table or path, optional
        Training and validation tables; default to ``config.data.train`` and
        ``config.data.validation``. Validation drives early stopping and the ``l2``
        search.
    features, validation_features : dict of str to matrix, optional
        A feature matrix per fixed or random coordinate (a scipy sparse matrix, a 2-D
        array or a DataFrame of numbers), one row per row of ``train`` (``validation``),
        in the same order. Its columns follow those the coordinate's config names in
        the table; sparse matrices stay sparse (see :mod:`gdmix.data.matrices`). Local
        engine only.
    feature_names : dict of str to list of str, optional
        The column names of each coordinate's matrix (default: a DataFrame's columns,
        else ``matrix[0], matrix[1], ...``), saved with the model: scoring matrices must
        have the same.
    callbacks : list of callables, optional
        Each is called with one record (dict) after every coordinate update: pass,
        coordinate, l2, train/validation AUC and log loss, seconds, solver diagnostics.
    trust_custom_code : bool
        Allow ``init_model`` folders to import a custom PyTorch module that the config
        itself does not name (see :meth:`GDMixModel.load`).

    With ``training.engine: dask`` the work runs on a Dask cluster
    (:func:`gdmix.engines.dask_engine.fit_dask`); the model is the same.

    Returns
    -------
    GDMixModel
        The best model seen (on validation), with ``history`` and ``metrics``.

    Raises
    ------
    GDMixError
        On bad data or configuration, before any training starts.
    """
    if not isinstance(config, GDMixConfig):
        raise TypeError(
            "config must be a GDMixConfig (from gdmix.load_config(path) or "
            f"gdmix.GDMixConfig(...)). Got {type(config).__name__} instead"
        )
    if callbacks is not None and not all(callable(cb) for cb in callbacks):
        raise TypeError("callbacks must be a list of callables taking one record (a dict)")
    for what, table in (("train", train), ("validation", validation)):
        if table is not None and not isinstance(table, list):  # a list: the dask engine's
            check_table_type(table, what)
    engine = config.training.engine
    with_matrices = features is not None or validation_features is not None
    if with_matrices and engine != "local":
        raise ConfigError(
            f"feature matrices (features=...) need training.engine: local; the {engine} "
            "engine reads every feature from the tables"
        )
    if engine == "local" and config.training.memory_budget_gb is not None and not with_matrices:
        from gdmix.engines.streaming_model import needs_streaming

        if needs_streaming(config, train if train is not None else config.data.train):
            logger.info(
                "the training data exceed training.memory_budget_gb (%s GB) in memory: "
                "training with the streaming engine",
                config.training.memory_budget_gb,
            )
            engine = "streaming"
    if engine == "streaming":
        from gdmix.engines.streaming_model import fit_streaming

        return fit_streaming(config, train, validation, callbacks=callbacks)
    if engine == "dask":
        from gdmix.engines.dask_engine import fit_dask

        return fit_dask(
            config, train, validation, callbacks=callbacks, trust_custom_code=trust_custom_code
        )
    if train is None:
        if config.data.train is None:
            raise ConfigError("no training data: pass 'train' or set 'data.train' in the config")
        train = config.data.train
    if validation is None and config.data.validation is not None:
        validation = config.data.validation
    # Coordinates reading the same columns check them once; the tables this call reads
    # itself are checked as they are read.
    with shared_finite_checks():
        train_frame = read_table(train)
        val_frame = read_table(validation) if validation is not None else None
        matrices, val_matrices = table_matrices(
            config, train_frame, val_frame, features, validation_features, feature_names
        )
        start = time.perf_counter()
        trainer = _Trainer(
            config, train_frame, val_frame, list(callbacks or []), trust_custom_code,
            matrices=matrices, validation_matrices=val_matrices,
        )  # fmt: skip
    model = trainer.run()
    model.lineage = {
        "mode": "train",
        "data": {"train": _data_entry(train, train_frame)},
        "generation": 0,
        "seconds": time.perf_counter() - start,
    }
    if val_frame is not None:
        assert validation is not None
        model.lineage["data"]["validation"] = _data_entry(validation, val_frame)
    return model


def table_matrices(
    config: GDMixConfig,
    train: pd.DataFrame,
    validation: pd.DataFrame | None,
    features: dict[str, MatrixInput] | None,
    validation_features: dict[str, MatrixInput] | None,
    feature_names: dict[str, list[str]] | None,
) -> tuple[dict[str, FeatureMatrix], dict[str, FeatureMatrix]]:
    """The training and validation tables' feature matrices, checked against the tables
    and each other (the same coordinates in both)."""
    names = [c.name for c in config.coordinates]
    matrices = feature_matrices(
        features, feature_names, len(train), "training data", coordinates=names
    )
    if validation is None:
        if validation_features is not None:
            raise ConfigError("validation_features was given without a validation table")
        return matrices, {}
    val_matrices = feature_matrices(
        validation_features, feature_names, len(validation), "validation data",
        coordinates=names, argument="validation_features",
    )  # fmt: skip
    if set(val_matrices) != set(matrices):
        raise ConfigError(
            f"validation_features must give a matrix for the same coordinates as features "
            f"({sorted(matrices)}). Got {sorted(val_matrices)} instead"
        )
    return matrices, val_matrices


def _data_entry(source: TableLike, frame: pd.DataFrame) -> dict[str, Any]:
    entry: dict[str, Any] = {"rows": len(frame)}
    if isinstance(source, str | os.PathLike):
        entry["path"] = str(source)
    return entry
