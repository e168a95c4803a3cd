"""The training history: one record per coordinate update, the same keys on every engine.

Every record (``model.history[i]``, saved in the manifest) has these keys:

==================== ==========================================================================
``pass``             coordinate-descent pass (1, 2, ...)
``coordinate``       the coordinate's name
``kind``             ``fixed``, ``random``, ``deep`` or ``gbdt``
``params``           the hyper-parameters of this fit (``l2``, ``intercept_l2``...; estimated
                     values for ``l2: auto``)
``candidate``        position of ``params`` in the coordinate's ``l2`` search grid (0 without one)
``selected``         whether this candidate was kept (always true without a search)
``seconds``          wall time of the fit
``train_auc``,       metrics of the training table after this fit, or ``None`` when not
``train_log_loss``   computed (``training.train_metrics``)
``validation_auc``,  metrics of the validation table after this fit, or ``None`` without
``validation_log_loss`` validation data
``converged``        whether the solver reached its optimum
==================== ==========================================================================

Solver diagnostics follow, with keys that depend on the coordinate's kind: ``n_iter``,
``objective``, ``stop``, ``solver`` (fixed effect); ``n_entities``, ``n_converged``,
``mean_iter``, ``max_iter`` (random effect); ``epochs`` (deep); ``n_trees`` (GBDT);
``prior`` (``l2: auto``: the estimated variances and their trajectory); ``max_abs_score``,
``diverged`` (scores running off); ``objective_change`` (passes without validation data).
"""

from __future__ import annotations

from typing import Any

__all__ = ["METRIC_KEYS", "RECORD_KEYS", "finish_record", "new_record"]

METRIC_KEYS = ("train_auc", "train_log_loss", "validation_auc", "validation_log_loss")
RECORD_KEYS = ("pass", "coordinate", "kind", "params", "candidate", "selected", "seconds",
               *METRIC_KEYS, "converged")  # fmt: skip


def new_record(pass_no: int, coordinate: Any, params: dict[str, Any], candidate: int = 0) -> dict:
    """The start of a record for an update of ``coordinate`` with ``params``."""
    return {
        "pass": pass_no,
        "coordinate": coordinate.name,
        "kind": coordinate.kind,
        "params": dict(params),
        "candidate": candidate,
        "selected": True,
    }


def finish_record(record: dict[str, Any]) -> dict[str, Any]:
    """Give ``record`` every key of the schema (``None`` for metrics not computed), in
    the schema's order first."""
    for key in METRIC_KEYS:
        record.setdefault(key, None)
    record.setdefault("converged", True)
    record.setdefault("seconds", 0.0)
    ordered = {k: record[k] for k in RECORD_KEYS if k in record}
    ordered.update({k: v for k, v in record.items() if k not in ordered})
    record.clear()
    record.update(ordered)
    return record
