"""The report's figures, drawn with matplotlib (Agg) and returned as PNG bytes.

Every figure stays readable at 10^7 entities: distributions are histograms, relations
are binned means, and a figure drawn from a sample says how large the sample is.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

__all__ = [
    "bar_chart",
    "binned_relation",
    "calibration",
    "histograms",
    "history_curves",
    "search_curves",
]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def history_curves(records: list[dict[str, Any]]) -> bytes:
    """Training and validation AUC and log loss after every kept coordinate update."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    steps = np.arange(1, len(records) + 1)
    labels = [f"{r['pass']}:{r['coordinate']}" for r in records]
    for ax, metric in zip(axes, ("auc", "log_loss"), strict=True):
        for split, style in (("train", "--"), ("validation", "-")):
            values = [r.get(f"{split}_{metric}") for r in records]
            if any(v is not None for v in values):
                y = [np.nan if v is None else v for v in values]
                ax.plot(steps, y, style, marker="o", label=split)
        ax.set_title(metric.replace("_", " "))
        ax.set_xticks(steps)
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("after every update (pass:coordinate)", fontsize=9)
    return _png(fig)


def search_curves(name: str, records: list[dict[str, Any]]) -> bytes:
    """Validation metric against ``l2`` for every pass of one coordinate's search (one
    line per ``intercept_l2`` value)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    metric = "validation_auc" if any(r.get("validation_auc") for r in records) else "train_auc"
    groups: dict[tuple[Any, Any], list[tuple[float, float]]] = {}
    for r in records:
        if r.get(metric) is None or not isinstance(r["params"].get("l2"), int | float):
            continue
        key = (r["pass"], r["params"].get("intercept_l2"))
        groups.setdefault(key, []).append((float(r["params"]["l2"]), float(r[metric])))
    for (pass_no, icpt), points in sorted(groups.items(), key=lambda kv: str(kv[0])):
        points.sort()
        label = f"pass {pass_no}" + (f", intercept_l2={icpt:g}" if icpt is not None else "")
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("l2")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(f"{name}: l2 search")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def calibration(y: np.ndarray, p: np.ndarray, n_bins: int = 20) -> bytes:
    """Reliability diagram (quantile bins of the predicted probability) and its histogram."""
    plt = _pyplot()
    fig, (ax, hx) = plt.subplots(2, 1, figsize=(5.5, 5.5), height_ratios=[3, 1], sharex=True)
    edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    counts = np.bincount(which, minlength=len(edges) - 1)
    keep = counts > 0
    mean_p = np.bincount(which, p, minlength=len(counts))[keep] / counts[keep]
    mean_y = np.bincount(which, y, minlength=len(counts))[keep] / counts[keep]
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect")
    ax.plot(mean_p, mean_y, marker="o", label="model")
    ax.set_ylabel("observed rate")
    ax.set_title(f"calibration ({len(p):,} rows, {int(keep.sum())} quantile bins)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    hx.hist(p, bins=50)
    hx.set_xlabel("predicted probability")
    return _png(fig)


def binned_relation(
    x: np.ndarray, y: np.ndarray, *, xlabel: str, ylabel: str, title: str, n_bins: int = 12
) -> bytes:
    """Mean (and interquartile range) of ``y`` in log-spaced bins of ``x`` (x >= 1)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    x = np.maximum(np.asarray(x, dtype=float), 1.0)
    edges = np.unique(np.geomspace(1.0, x.max() + 1.0, n_bins + 1))
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    centres, means, lo, hi, sizes = [], [], [], [], []
    for b in range(len(edges) - 1):
        sel = y[which == b]
        if len(sel) == 0:
            continue
        centres.append(np.sqrt(edges[b] * edges[b + 1]))
        means.append(sel.mean())
        lo.append(np.quantile(sel, 0.25))
        hi.append(np.quantile(sel, 0.75))
        sizes.append(len(sel))
    ax.fill_between(centres, lo, hi, alpha=0.25, label="interquartile range")
    ax.plot(centres, means, marker="o", label="mean")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title} ({len(y):,} entities)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def histograms(panels: list[tuple[str, np.ndarray, bool]], title: str) -> bytes:
    """Side-by-side histograms: ``(label, values, log_x)`` per panel."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2))
    axes = np.atleast_1d(axes)
    for ax, (label, values, log_x) in zip(axes, panels, strict=True):
        values = np.asarray(values, dtype=float)
        if log_x:
            values = values[values > 0]
            bins = np.geomspace(values.min(), values.max() * 1.0001, 40) if len(values) else 10
            ax.set_xscale("log")
        else:
            bins = 50
        ax.hist(values, bins=bins)
        ax.set_title(f"{label} ({len(values):,})", fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return _png(fig)


def bar_chart(labels: list[str], values: list[float], *, title: str, xlabel: str) -> bytes:
    """Horizontal bars, largest at the top."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(labels) + 1.2))
    pos = np.arange(len(labels))[::-1]
    ax.barh(pos, values, color=["#3b75af" if v >= 0 else "#c44e52" for v in values])
    ax.set_yticks(pos)
    ax.set_yticklabels(labels, fontsize=8)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)
