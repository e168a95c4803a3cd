"""The tasks a model can have, and the metrics of each (plain data, no computation).

``task:`` at the top of a config sets the model's likelihood for every coordinate:
``logistic`` (0/1 labels, log loss), ``linear`` (real labels, squared loss) or
``poisson`` (counts, log link). See :mod:`gdmix.losses` for the losses and
:mod:`gdmix.task_metrics` for the metrics.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "METRICS",
    "TASKS",
    "Task",
    "default_metric",
    "goodness",
    "higher_is_better",
    "task_metric_names",
]

#: A task's name.
Task = Literal["logistic", "linear", "poisson"]
#: The tasks, in the order of their integer codes in compiled code.
TASKS: tuple[str, ...] = ("logistic", "linear", "poisson")
#: Every metric ``training.metric`` can name, by task; the first is the default.
METRICS: dict[str, tuple[str, ...]] = {
    "logistic": ("auc", "log_loss", "aupr", "rmse"),
    "linear": ("rmse",),
    "poisson": ("poisson_deviance", "rmse"),
}
_HIGHER_IS_BETTER = frozenset({"auc", "aupr"})


def default_metric(task: str) -> str:
    """The metric that chooses among models by default: AUC, RMSE, Poisson deviance."""
    return METRICS[task][0]


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is a better model."""
    return metric in _HIGHER_IS_BETTER


def goodness(metrics: dict[str, float], metric: str) -> float:
    """``metrics[metric]`` as a number to maximise (negated for losses and errors)."""
    value = metrics[metric]
    return value if higher_is_better(metric) else -value


def task_metric_names(task: str) -> tuple[str, ...]:
    """The metrics computed after every coordinate update for ``task``: AUC and log loss
    (logistic), RMSE (linear), Poisson deviance and RMSE (Poisson)."""
    return METRICS[task][:2]
