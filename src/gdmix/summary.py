"""What a trained model holds, in one screen: ``gdmix inspect`` and ``model.summary()``.

:func:`model_summary` gathers, from the model alone (no data): its provenance, final
metrics, every coordinate's size and hyper-parameters, the training history pass by pass,
the fixed effect's largest coefficients, and per random effect the spread of its
intercepts and coefficients with their shrinkage (entities binned by rows: few rows, small
coefficients). :func:`render_summary` prints it; :func:`entity_summary` shows one entity.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gdmix.data.entity_keys import canonical_keys
from gdmix.errors import DataError

__all__ = [
    "ROW_BINS",
    "entity_summary",
    "model_summary",
    "random_effect_table",
    "render_entity",
    "render_summary",
    "row_norms",
]

#: Bins of rows per entity (left edges) of the shrinkage tables.
ROW_BINS = (1, 2, 4, 11, 31, 101, 1001, 10001)


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    q = np.quantile(values, [0.0, 0.05, 0.5, 0.95, 1.0])
    return {
        "mean": float(np.mean(values)),
        "sd": float(np.std(values)),
        "min": float(q[0]),
        "p5": float(q[1]),
        "p50": float(q[2]),
        "p95": float(q[3]),
        "max": float(q[4]),
    }


def row_norms(coef: np.ndarray | sp.csr_matrix) -> np.ndarray:
    """Euclidean norm of every row (every entity's coefficient vector), dense or CSR."""
    if sp.issparse(coef):
        return np.sqrt(np.asarray(coef.multiply(coef).sum(axis=1)).ravel())
    return np.sqrt((np.asarray(coef) ** 2).sum(axis=1)) if coef.shape[1] else np.zeros(len(coef))


def shrinkage_table(n_rows: np.ndarray, intercept: np.ndarray, norms: np.ndarray) -> list[dict]:
    """Entities binned by training rows: count, mean |intercept|, mean coefficient norm."""
    edges = [*ROW_BINS, np.inf]
    out = []
    for lo, hi in itertools.pairwise(edges):
        keep = (n_rows >= lo) & (n_rows < hi)
        if not keep.any():
            continue
        label = f"{lo}" if hi == lo + 1 else (f"{lo}+" if np.isinf(hi) else f"{lo}-{int(hi) - 1}")
        out.append(
            {
                "rows": label,
                "entities": int(keep.sum()),
                "mean_abs_intercept": float(np.abs(intercept[keep]).mean()),
                "mean_coef_norm": float(norms[keep].mean()),
            }
        )
    return out


def _coordinate(coord: Any, top: int) -> dict[str, Any]:
    info: dict[str, Any] = {"name": coord.name, "kind": coord.kind, "params": coord.params}
    features = getattr(coord, "features", None)
    if features is not None:
        info["n_features"] = features.n_features
    if coord.kind == "fixed":
        table = coord.coefficient_table()
        body = table.iloc[1:]
        order = np.argsort(-np.abs(body["coefficient"].to_numpy()), kind="stable")[:top]
        info["intercept"] = float(table["coefficient"].iloc[0])
        feats, values = body["feature"].to_numpy(), body["coefficient"].to_numpy()
        info["top_coefficients"] = [
            {"feature": str(feats[i]), "coefficient": float(values[i])} for i in order
        ]
    elif coord.kind == "random":
        keep = np.flatnonzero(coord.has_model)
        n_rows = coord.n_rows[keep]
        intercept = coord.intercept[keep]
        norms = row_norms(coord.coef[keep])
        info.update(
            entity=coord.config.entity,
            entity_key=coord.key_kind,
            n_entities=len(keep),
            rows_seen=int(n_rows.sum()),
            train_coverage=coord.train_coverage,
            rows_per_entity=_quantiles(n_rows.astype(float)),
            intercept=_quantiles(intercept),
            coefficient_norm=_quantiles(norms),
            shrinkage=shrinkage_table(n_rows, intercept, norms),
        )
    elif coord.kind == "deep" and getattr(coord, "network", None) is not None:
        info["n_parameters"] = int(sum(p.numel() for p in coord.network.parameters()))
    elif coord.kind == "gbdt" and getattr(coord, "booster", None) is not None:
        info["n_trees"] = int(coord.booster.num_trees())
        imp = coord.feature_importance().head(top)
        pairs = zip(imp["feature"], imp["importance"], strict=True)
        info["top_importance"] = [{"feature": str(f), "gain": float(g)} for f, g in pairs]
    return info


def _passes(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = (
        "pass",
        "coordinate",
        "params",
        "train_auc",
        "validation_auc",
        "validation_log_loss",
        "seconds",
        "converged",
    )
    return [{k: r.get(k) for k in keys} for r in history if r.get("selected", True)]


def model_summary(model: Any, *, top: int = 10) -> dict[str, Any]:
    """Everything :func:`render_summary` shows, as a JSON-ready dict."""
    lineage = model.lineage or {}
    return {
        "path": str(model.path) if getattr(model, "path", None) else None,
        "lineage": {
            k: lineage.get(k) for k in ("mode", "parent", "generation", "seconds") if k in lineage
        },
        "data": (lineage.get("data") or {}),
        "columns": dict(model.data.model_dump()),
        "metrics": {k: v for k, v in model.metrics.items() if k != "params"},
        "coordinates": [_coordinate(c, top) for c in model.coordinates],
        "passes": _passes(model.history),
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return (
            "[" + ", ".join(_fmt(v) for v in value[:6]) + (", ..." if len(value) > 6 else "") + "]"
        )
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items() if v is not None)
    return str(value)


def render_summary(summary: dict[str, Any]) -> str:
    """One screen of text from :func:`model_summary`."""
    lines = [f"gdmix model {summary['path'] or '(in memory)'}"]
    if summary["lineage"]:
        lines.append(f"  lineage: {_fmt(summary['lineage'])}")
    for name, part in summary["data"].items():
        lines.append(f"  {name} data: {_fmt(part)}")
    metrics = summary["metrics"]
    for name in ("train", "validation", "test"):
        if isinstance(metrics.get(name), dict):
            m = metrics[name]
            lines.append(f"  {name}: auc {_fmt(m.get('auc'))}, log loss {_fmt(m.get('log_loss'))}")
    if "stopped" in metrics:
        lines.append(f"  stopped: {_fmt(metrics['stopped'])}")
    lines.append("")
    lines.append("coordinates")
    for c in summary["coordinates"]:
        head = f"  {c['name']} ({c['kind']}): {_fmt(c['params'])}"
        if "n_features" in c:
            head += f"; {c['n_features']} features"
        lines.append(head)
        if c["kind"] == "fixed":
            lines.append(f"    intercept {c['intercept']:.4g}; largest coefficients:")
            for t in c["top_coefficients"]:
                lines.append(f"      {t['coefficient']:+10.4f}  {t['feature']}")
        elif c["kind"] == "random":
            lines.append(
                f"    {c['n_entities']} entities of '{c['entity']}' ({c['entity_key']} ids), "
                f"{c['rows_seen']} rows seen; rows per entity {_fmt(c['rows_per_entity'])}"
            )
            lines.append(f"    intercepts {_fmt(c['intercept'])}")
            lines.append(f"    coefficient norms {_fmt(c['coefficient_norm'])}")
            lines.append("    shrinkage (rows per entity: entities, mean |intercept|, mean |w|):")
            lines.append(
                "      "
                + "; ".join(
                    f"{s['rows']}: {s['entities']}, {s['mean_abs_intercept']:.3f}, "
                    f"{s['mean_coef_norm']:.3f}"
                    for s in c["shrinkage"]
                )
            )
        elif c["kind"] == "deep" and "n_parameters" in c:
            lines.append(f"    {c['n_parameters']} parameters")
        elif c["kind"] == "gbdt" and "n_trees" in c:
            lines.append(
                f"    {c['n_trees']} trees; top gain: "
                + ", ".join(t["feature"] for t in c["top_importance"][:5])
            )
    if summary["passes"]:
        lines.append("")
        lines.append("training (kept fit of every update)")
        lines.append(
            f"  {'pass':>4}  {'coordinate':<16}{'train AUC':>10}{'valid AUC':>10}"
            f"{'seconds':>9}  params"
        )
        for p in summary["passes"]:
            lines.append(
                f"  {p['pass']:>4}  {p['coordinate']:<16}{_fmt(p['train_auc']):>10}"
                f"{_fmt(p['validation_auc']):>10}{_fmt(p['seconds']):>9}  "
                f"{_fmt(p['params'])}"
            )
    return "\n".join(lines)


def entity_summary(model: Any, coordinate: str, entity: Any) -> dict[str, Any]:
    """One entity's model in a random effect: rows seen, intercept, every coefficient
    with its feature name (largest first) and variance.

    Raises
    ------
    DataError
        When the coordinate is not a random effect or does not know the entity.
    """
    try:
        coord = model[coordinate]
    except KeyError as err:
        raise DataError(str(err).strip("'\"")) from None
    if coord.kind != "random":
        raise DataError(f"coordinate '{coordinate}' is a {coord.kind} effect, not a random effect")
    keys, ok = canonical_keys(pd.Series([entity]), coord.key_kind)
    pos = coord.entity_ids.get_indexer(keys) if ok[0] else np.array([-1])
    if pos[0] < 0 or not coord.has_model[pos[0]]:
        raise DataError(f"random effect '{coordinate}' has no model for entity {entity!r}")
    e = int(pos[0])
    names = coord.features.feature_names()
    row = coord.coef[e]
    values = row.toarray().ravel() if sp.issparse(row) else np.asarray(row).ravel()
    var = None
    if coord.variance is not None:
        v = coord.variance[e]
        var = v.toarray().ravel() if sp.issparse(v) else np.asarray(v).ravel()
    order = [j for j in np.argsort(-np.abs(values), kind="stable") if values[j] != 0]
    return {
        "coordinate": coordinate,
        "entity": _plain(coord.entity_ids[e]),
        "n_rows": int(coord.n_rows[e]),
        "intercept": float(coord.intercept[e]),
        "intercept_variance": (
            float(coord.intercept_variance[e]) if coord.intercept_variance is not None else None
        ),
        "coefficients": [
            {
                "feature": names[j],
                "coefficient": float(values[j]),
                "variance": float(var[j]) if var is not None else None,
            }
            for j in order
        ],
    }


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def render_entity(info: dict[str, Any]) -> str:
    """Text of :func:`entity_summary`."""
    lines = [
        f"{info['coordinate']} entity {info['entity']!r}: {info['n_rows']} rows seen",
        f"  intercept {info['intercept']:+.4f}"
        + (f" (variance {info['intercept_variance']:.3g})" if info["intercept_variance"] else ""),
    ]
    for c in info["coefficients"]:
        var = f" (variance {c['variance']:.3g})" if c["variance"] is not None else ""
        lines.append(f"  {c['coefficient']:+10.4f}  {c['feature']}{var}")
    if not info["coefficients"]:
        lines.append("  (no non-zero coefficients)")
    return "\n".join(lines)


def random_effect_table(coord: Any) -> pd.DataFrame:
    """A random effect's coefficients with feature names: one row per entity with a model,
    columns ``entity_id``, ``n_rows``, ``intercept`` and one per feature (dense shards);
    for wide sparse shards, one row per stored coefficient (``entity_id``, ``feature``,
    ``coefficient``)."""
    keep = np.flatnonzero(coord.has_model)
    names = coord.features.feature_names()
    coef = coord.coef[keep]
    if sp.issparse(coef):
        coo = coef.tocoo()
        return pd.DataFrame(
            {
                "entity_id": coord.entity_ids[keep][coo.row],
                "feature": np.asarray(names, dtype=object)[coo.col],
                "coefficient": coo.data,
            }
        )
    table = pd.DataFrame(np.asarray(coef), columns=names)
    table.insert(0, "intercept", coord.intercept[keep])
    table.insert(0, "n_rows", coord.n_rows[keep])
    table.insert(0, "entity_id", coord.entity_ids[keep])
    return table
