"""Assembling the report: sections of text, tables and embedded figures."""

from __future__ import annotations

import base64
import html
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gdmix._version import __version__
from gdmix.data.io import TableLike, check_output_file, read_table
from gdmix.errors import ConfigError, OutputError
from gdmix.fsutil import sibling
from gdmix.losses import logistic_loss, sigmoid
from gdmix.metrics import roc_auc
from gdmix.report import plots
from gdmix.summary import model_summary, render_summary, row_norms

__all__ = ["build_report", "write_report"]

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; margin-top: 2em; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; font-size: 0.8em; }
table { border-collapse: collapse; font-size: 0.85em; }
td, th { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: right; }
th { background: #f0f0f0; } img { max-width: 100%; } .note { color: #666; font-size: 0.85em; }
"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(r.get(k)))}</td>" for k in keys) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


class _Report:
    def __init__(self, title: str) -> None:
        self.parts: list[str] = []
        self.title = title

    def h2(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def p(self, text: str, note: bool = False) -> None:
        cls = ' class="note"' if note else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def add(self, fragment: str) -> None:
        self.parts.append(fragment)

    def html(self) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        return (
            '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1>"
            f'<p class="note">gdmix {__version__}, {stamp}</p>'
            + "\n".join(self.parts)
            + "</body></html>\n"
        )


def _history(report: _Report, model: Any) -> None:
    kept = [r for r in model.history if r.get("selected", True)]
    if not kept:
        return
    report.h2("Training history")
    report.add(_img(plots.history_curves(kept), "training history"))
    for c in model.coordinates:
        records = [r for r in model.history if r["coordinate"] == c.name]
        if len({r.get("candidate", 0) for r in records}) > 1:
            report.add(_img(plots.search_curves(c.name, records), f"{c.name} l2 search"))


def _fixed_effects(report: _Report, model: Any, summary: dict[str, Any]) -> None:
    for info in summary["coordinates"]:
        if info["kind"] == "fixed" and info["top_coefficients"]:
            top = info["top_coefficients"][:20]
            report.h2(f"Fixed effect '{info['name']}': largest coefficients")
            report.add(
                _img(
                    plots.bar_chart(
                        [t["feature"] for t in top],
                        [t["coefficient"] for t in top],
                        title=f"{info['name']} (intercept {info['intercept']:.3g})",
                        xlabel="coefficient",
                    ),
                    "coefficients",
                )
            )
        elif info["kind"] == "gbdt" and info.get("top_importance"):
            top = info["top_importance"][:20]
            report.h2(f"Fixed effect '{info['name']}': LightGBM gain importance")
            report.add(
                _img(
                    plots.bar_chart(
                        [t["feature"] for t in top],
                        [t["gain"] for t in top],
                        title=info["name"],
                        xlabel="gain",
                    ),
                    "importance",
                )
            )


def _random_effects(report: _Report, model: Any, summary: dict[str, Any]) -> None:
    for info in summary["coordinates"]:
        if info["kind"] != "random":
            continue
        coord = model[info["name"]]
        keep = np.flatnonzero(coord.has_model)
        report.h2(f"Random effect '{info['name']}' ({info['n_entities']:,} entities)")
        norms = row_norms(coord.coef[keep])
        panels = [
            ("rows per entity", coord.n_rows[keep], True),
            ("intercepts", coord.intercept[keep], False),
        ]
        if coord.coef.shape[1]:
            panels.append(("coefficient norms", norms, False))
        report.add(
            _img(plots.histograms(panels, f"{info['name']}: distributions"), "distributions")
        )
        report.add(
            _img(
                plots.binned_relation(
                    coord.n_rows[keep],
                    np.abs(coord.intercept[keep]) + norms,
                    xlabel="training rows of the entity",
                    ylabel="|intercept| + |w|",
                    title=f"{info['name']}: shrinkage",
                ),
                "shrinkage",
            )
        )
        report.add(_table(info["shrinkage"]))


def _permutation_importance(
    model: Any, coord: Any, frame: pd.DataFrame, y: np.ndarray, total: np.ndarray, seed: int
) -> list[tuple[str, float]]:
    """AUC lost when each input column of ``coord`` is shuffled (the others kept)."""
    rng = np.random.default_rng(seed)
    base_auc = roc_auc(y, total)
    own = coord.score(coord.design(frame, "report data"))
    out = []
    for col in dict.fromkeys(coord.columns()):
        shuffled = frame.copy()
        shuffled[col] = frame[col].to_numpy()[rng.permutation(len(frame))]
        s = coord.score(coord.design(shuffled, "report data"))
        out.append((col, float(base_auc - roc_auc(y, total - own + s))))
    return sorted(out, key=lambda kv: -kv[1])


def _with_data(report: _Report, model: Any, frame: pd.DataFrame, n_total: int, seed: int) -> None:
    label = model.data.label
    y = frame[label].to_numpy(dtype=np.float64)
    scores = model.score(frame, where="report data")
    total = scores["total"].to_numpy()
    sampled = (
        f" (a uniform sample of {len(frame):,} of {n_total:,} rows)" if len(frame) < n_total else ""
    )
    report.h2("On the given data" + sampled)
    if model.task != "logistic":  # the task's metrics; the plots below are a classifier's
        from gdmix.task_metrics import task_evaluate

        report.add(_table([{"rows": len(frame), **task_evaluate(model.task, y, total)}]))
        return
    p = sigmoid(total)
    loss = logistic_loss(y, total)
    metrics = [
        {
            "rows": len(frame),
            "auc": roc_auc(y, total),
            "log_loss": float(loss.mean()),
            "mean label": float(y.mean()),
            "mean probability": float(p.mean()),
        }
    ]
    report.add(_table(metrics))
    report.add(_img(plots.calibration(y, p), "calibration"))
    for coord in model.coordinates:
        if coord.kind == "random":
            codes = coord._codes(frame[coord.config.entity])
            known = codes >= 0
            known[known] = coord.has_model[codes[known]]
            report.p(f"{coord.name}: {known.mean():.1%} of the rows have an entity with a model.")
            if known.sum() < 2:
                continue
            c = codes[known]
            sums = np.bincount(c, loss[known], minlength=len(coord.entity_ids))
            counts = np.bincount(c, minlength=len(coord.entity_ids))
            seen = np.flatnonzero(counts)
            report.add(
                _img(
                    plots.binned_relation(
                        coord.n_rows[seen],
                        sums[seen] / counts[seen],
                        xlabel="training rows of the entity",
                        ylabel="log loss on the data",
                        title=f"{coord.name}: accuracy against rows per entity",
                    ),
                    "per-entity",
                )
            )
        elif coord.kind in ("deep", "gbdt"):
            sub = frame.iloc[: min(len(frame), 20_000)]
            imp = _permutation_importance(
                model, coord, sub.reset_index(drop=True), y[: len(sub)], total[: len(sub)], seed
            )
            if imp:
                report.h2(
                    f"Fixed effect '{coord.name}': permutation importance ({len(sub):,} rows)"
                )
                report.add(
                    _img(
                        plots.bar_chart(
                            [k for k, _ in imp[:20]],
                            [v for _, v in imp[:20]],
                            title=coord.name,
                            xlabel="AUC lost when shuffled",
                        ),
                        "permutation importance",
                    )
                )


def build_report(
    model: Any,
    data: TableLike | None = None,
    *,
    max_rows: int = 200_000,
    seed: int = 0,
) -> str:
    """The report's HTML.

    Sections: the model summary (provenance, metrics, sizes, hyper-parameters, pass by
    pass); training history (train and validation AUC and log loss after every update)
    and each ``l2`` search's curves; the fixed effect's largest coefficients (LightGBM:
    gain importance); per random effect, distributions of rows per entity, intercepts and
    coefficient norms and the shrinkage with rows per entity. With ``data`` (labelled):
    AUC and log loss, a calibration (reliability) plot, per random effect the log loss
    on the data against the entity's training rows, and for deep and GBDT fixed effects
    permutation importance. Tables larger than ``max_rows`` are sampled (seeded) and the
    sample size is stated.

    Raises
    ------
    ConfigError
        When matplotlib is not installed (``pip install gdmix[report]``).
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("the report needs matplotlib: pip install 'gdmix[report]'") from None
    summary = model_summary(model, top=20)
    report = _Report(f"gdmix model report: {summary['path'] or 'model'}")
    report.h2("Summary")
    report.add(f"<pre>{html.escape(render_summary(summary))}</pre>")
    _history(report, model)
    _fixed_effects(report, model, summary)
    _random_effects(report, model, summary)
    if data is not None:
        frame = read_table(data)
        n_total = len(frame)
        if n_total > max_rows:
            rows = np.sort(np.random.default_rng(seed).choice(n_total, max_rows, replace=False))
            frame = frame.iloc[rows].reset_index(drop=True)
        _with_data(report, model, frame, n_total, seed)
    return report.html()


def write_report(
    model: Any,
    output: str | os.PathLike[str],
    data: TableLike | None = None,
    *,
    overwrite: bool = False,
    inside_model: bool = False,
) -> Path:
    """Write :func:`build_report`'s HTML to ``output`` (atomically).

    ``inside_model`` allows ``output`` to be the model directory's own ``report.html``
    (``gdmix train --report``); other files inside a model directory are refused, as are
    existing files without ``overwrite``.
    """
    path = Path(output)
    if not path.name.lower().endswith((".html", ".htm")):
        raise OutputError(f"{path}: a report is an .html file")
    if not inside_model:
        check_output_file(path, overwrite=overwrite, table=False)
    text = build_report(model, data)
    tmp = sibling(path, "tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path
