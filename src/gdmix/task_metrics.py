"""Metrics of every task: precision-recall (AUPR), RMSE, Poisson deviance, precision@k.

:mod:`gdmix.metrics` holds the binary classifier's AUC and log loss; this module adds
the metrics of the other tasks and of ranking, and :func:`task_evaluate`, which picks a
task's metrics from a margin (logit, mean or log rate). Every metric takes row weights.

========================== =============================================================
``auc``, ``log_loss``      logistic (from :mod:`gdmix.metrics`)
``aupr``                   logistic: average precision, the area under the
                           precision-recall curve as a step function (scikit-learn's
                           ``average_precision_score``)
``rmse``                   every task: root mean squared error of the mean
``poisson_deviance``       Poisson: mean deviance ``2 (y log(y / mu) - y + mu)``
``precision@k``            logistic: per entity, the share of positives among its ``k``
                           best-scored rows, averaged over entities (rows weighted
                           equally; ties broken by row order)
========================== =============================================================
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from gdmix.errors import DataError
from gdmix.losses import MAX_EXP_MARGIN, inverse_link, task_loss
from gdmix.metrics import BinaryEvaluator, _logit_loss_sum, grouped_auc
from gdmix.tasks import METRICS, default_metric, higher_is_better, task_metric_names

__all__ = [
    "AUTO_TRAIN_METRICS_MAX_ROWS",
    "METRICS",
    "SORTED_METRICS",
    "TaskEvaluator",
    "average_precision",
    "default_metric",
    "evaluated_names",
    "higher_is_better",
    "loss_sum",
    "poisson_deviance",
    "precision_at_k",
    "rmse",
    "task_evaluate",
    "task_metric_names",
]


def _arrays(
    y_true: ArrayLike, values: ArrayLike, sample_weight: ArrayLike | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.shape != y.shape:
        raise DataError(f"scores have {v.shape[0]} rows but labels have {y.shape[0]}")
    if not (np.isfinite(y).all() and np.isfinite(v).all()):
        raise DataError("labels and scores must be finite numbers")
    w = np.ones_like(y) if sample_weight is None else np.asarray(sample_weight, float).ravel()
    if w.shape != y.shape or not np.isfinite(w).all() or (w < 0).any():
        raise DataError("sample weights must be finite, >= 0 and one per row")
    if w.sum() <= 0:
        raise DataError("the metric needs at least one row with positive weight")
    return y, v, w


def rmse(y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
    """Root (weighted) mean squared error of the predicted means ``y_pred``."""
    y, p, w = _arrays(y_true, y_pred, sample_weight)
    return float(np.sqrt(np.dot(w, (y - p) ** 2) / w.sum()))


def poisson_deviance(
    y_true: ArrayLike, log_rate: ArrayLike, sample_weight: ArrayLike | None = None
) -> float:
    """Mean (weighted) Poisson deviance ``2 (y log(y / mu) - y + mu)``, ``mu = exp(z)``.

    Takes the margin ``z`` (the log of the rate), so that no rate underflows to 0.
    """
    y, z, w = _arrays(y_true, log_rate, sample_weight)
    if (y < 0).any():
        raise DataError("Poisson labels must be counts >= 0")
    mu = np.exp(np.minimum(z, MAX_EXP_MARGIN))
    with np.errstate(divide="ignore", invalid="ignore"):
        ylog = np.where(y > 0, y * (np.log(np.where(y > 0, y, 1.0)) - z), 0.0)
    dev = 2.0 * (ylog - y + mu)
    return float(np.dot(w, dev) / w.sum())


def average_precision(
    y_true: ArrayLike, y_score: ArrayLike, sample_weight: ArrayLike | None = None
) -> float:
    """Area under the precision-recall curve as a step function (average precision).

    ``sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds in decreasing
    order, rows of equal score taken together; one sort.
    """
    y, s, w = _arrays(y_true, y_score, sample_weight)
    if not np.isin(y, (0.0, 1.0)).all():
        raise DataError("average precision needs 0/1 labels")
    order = np.argsort(-s, kind="stable")
    s, y, w = s[order], y[order], w[order]
    tp = np.cumsum(w * y)
    fp = np.cumsum(w * (1.0 - y))
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last row of each threshold
    tp, fp = tp[last], fp[last]
    if tp[-1] <= 0:
        raise DataError("average precision needs at least one positive row")
    precision = tp / np.maximum(tp + fp, 1e-300)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def precision_at_k(y_true: ArrayLike, y_score: ArrayLike, groups: ArrayLike, k: int = 10) -> float:
    """Per group (entity), the share of positives among its ``k`` best-scored rows
    (all its rows when it has fewer), averaged over groups; ties by row order."""
    if k < 1:
        raise DataError(f"precision@k needs k >= 1. Got {k} instead")
    y, s, _ = _arrays(y_true, y_score, None)
    codes, _ = pd.factorize(pd.Series(np.asarray(groups).ravel()), sort=False)
    if len(codes) != len(y):
        raise DataError("groups must have one id per row")
    order = np.lexsort((np.arange(len(s)), -s, codes))
    codes_sorted = codes[order]
    starts = np.r_[0, np.flatnonzero(np.diff(codes_sorted)) + 1]
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    top = rank < k
    hits = np.bincount(codes_sorted[top], weights=y[order][top])
    counts = np.bincount(codes_sorted[top])
    return float(np.mean(hits / counts))


def task_evaluate(
    task: str,
    y_true: ArrayLike,
    margin: ArrayLike,
    *,
    sample_weight: ArrayLike | None = None,
    groups: Mapping[str, ArrayLike] | None = None,
    k: int = 10,
) -> dict[str, float]:
    """Every metric of ``task`` from the model's margins (logits, means, log rates).

    Parameters
    ----------
    task : {"logistic", "linear", "poisson"}
        The model's task.
    y_true, margin : array_like of shape (n,)
        Labels and the total margins.
    sample_weight : array_like of shape (n,), optional
        Row weights.
    groups : mapping of str to array_like, optional
        Entity ids per random effect: logistic models add ``auc@<name>`` and
        ``precision@k@<name>``.
    k : int
        The ``k`` of precision@k.

    Returns
    -------
    dict of str to float
        ``auc``, ``log_loss``, ``aupr``, ``rmse`` (logistic); ``rmse`` (linear);
        ``poisson_deviance``, ``rmse`` (Poisson); and ``n_rows``.
    """
    if task not in METRICS:
        raise ValueError(f"task must be one of {tuple(METRICS)}. Got {task!r} instead")
    z = np.asarray(margin, dtype=np.float64)
    out = TaskEvaluator(y_true, sample_weight, task, names=METRICS[task]).evaluate(z)
    if task == "logistic":
        for name, ids in (groups or {}).items():
            out[f"auc@{name}"] = grouped_auc(y_true, z, ids, sample_weight)
            out[f"precision@{k}@{name}"] = precision_at_k(y_true, z, ids, k)
    out["n_rows"] = float(len(z))
    return out


#: Metrics that sort the rows (a full sort of every row per evaluation); the others are
#: one pass over them.
SORTED_METRICS = frozenset({"auc", "aupr"})

#: ``training.train_metrics: auto`` evaluates a training table's sorted metrics only
#: when it has at most this many rows (every engine).
AUTO_TRAIN_METRICS_MAX_ROWS = 1_000_000


def evaluated_names(task: str, metric: str | None = None) -> tuple[str, ...]:
    """The metrics a table is evaluated on: the task's usual ones and the selection
    metric ``metric``, once each."""
    return tuple(dict.fromkeys((*task_metric_names(task), *([metric] if metric else []))))


class TaskEvaluator:
    """The metrics of many margin vectors over one table's fixed labels and weights.

    For a logistic task, AUC and log loss through :class:`gdmix.metrics.BinaryEvaluator`
    (the class split made once); for the others, their metrics of
    :func:`gdmix.tasks.task_metric_names`. ``metric`` (the selection metric) is always
    among the results.

    Parameters
    ----------
    y_true : array_like of shape (n,)
        Labels.
    sample_weight : array_like of shape (n,), optional
        Row weights.
    task : {"logistic", "linear", "poisson"}
        The model's task.
    metric : str, optional
        A metric to compute besides the task's usual ones (``aupr``, ``rmse``...).
    names : tuple of str, optional
        The metrics to compute instead (every one of them, in this order).
    """

    def __init__(
        self,
        y_true: ArrayLike,
        sample_weight: ArrayLike | None = None,
        task: str = "logistic",
        metric: str | None = None,
        *,
        names: tuple[str, ...] | None = None,
    ) -> None:
        self.task = task
        self.names = evaluated_names(task, metric) if names is None else tuple(dict.fromkeys(names))
        self.y = np.asarray(y_true, dtype=np.float64)
        self.w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        binary = task == "logistic" and bool({"auc", "log_loss"} & set(self.names))
        self._binary = BinaryEvaluator(self.y, self.w) if binary else None

    def evaluate(self, margin: ArrayLike) -> dict[str, float]:
        """The metrics of the margins ``margin`` (logits, means or log rates)."""
        z = np.asarray(margin, dtype=np.float64)
        out: dict[str, float] = {}
        for name in self.names:
            if name == "auc" and self._binary is not None:
                out[name] = self._binary.auc(z)
            elif name == "log_loss" and self._binary is not None:
                out[name] = self._binary.log_loss(z)
            elif name == "aupr":
                out[name] = average_precision(self.y, z, self.w)
            elif name == "rmse":
                out[name] = rmse(self.y, inverse_link(self.task, z), self.w)
            elif name == "poisson_deviance":
                out[name] = poisson_deviance(self.y, z, self.w)
            else:
                raise ValueError(f"metric {name!r} is not a metric of task {self.task!r}")
        return out


def loss_sum(task: str, y: np.ndarray, margin: np.ndarray, weight: np.ndarray) -> float:
    """Weighted sum of the task's loss (the training objective without penalties)."""
    if task == "logistic":
        return float(_logit_loss_sum(y, margin, weight, True))
    return float(np.dot(weight, task_loss(task, y, margin)))
