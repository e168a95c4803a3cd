"""The refresh loop: the GDMix paper's Table-2 scheme on time-ordered MovieLens-100K, and
the cost of a refresh at scale.

Usage::

    python benchmarks/refresh.py                 # MovieLens-100K, time-ordered
    python benchmarks/refresh.py --scale [--entities 1000000]

MovieLens (``GDMIX_DATA_DIR`` as for ``benchmarks/movielens.py``): label rating > 3, rows in
timestamp order, 14-day periods counted from the Monday before the first rating
(1997-09-15 00:00 UTC). Each test period p from the third on is scored by models
trained on the two periods before it. Features as the MovieLens example (global: user
and movie features; per-user random effect on movie features; per-movie on user
features). The l2 values are chosen once, on the first window's last 20% (by time), and
then fixed; one pass. Schemes:

- ``static_fe``, ``static_fere``: trained once on the first window;
- ``full``: everything retrained on each window;
- ``partial``: the first window's fixed effect frozen, the random effects retrained on
  each window (``gdmix refresh --mode partial``, chained through a model store);
- ``incremental``: the fixed effect frozen, the random effects updated on the newest
  period only with the previous model as the prior (``--mode incremental``, chained).

Prints per-period AUCs and training seconds; the last line is JSON: mean test AUC over the
test periods per scheme and the median seconds per (re)training.

``--scale``: ``--entities`` entities x 20 rows (one fixed effect and one random effect,
10 features each) trained once; then 2,000,000 new rows (2 per entity of 10% of the
entities ... scaled with --entities) and a refresh with ``--mode incremental`` against a
full retrain on all rows; both scored on held-out new rows of the touched entities.
Last line JSON: ``{"seconds_refresh_1m": s, "seconds_full_1m": s, "auc_refresh": a,
"auc_full": a}``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import gdmix
from gdmix.config import parse_config
from gdmix.data.movielens import load_movielens_100k
from gdmix.examples.movielens import example_config
from gdmix.metrics import roc_auc
from gdmix.model import GDMixModel
from gdmix.refresh import refresh
from gdmix.store import ModelStore

PERIOD_SECONDS = 14 * 86400
EPOCH = pd.Timestamp("1997-09-15T00:00:00Z").timestamp()
GRID = {
    "global": {"l2": [0.1, 1.0, 10.0]},
    "per_user": {"l2": [1.0, 3.0, 10.0, 30.0], "intercept_l2": [0.3, 1.0, 3.0]},
    "per_movie": {"l2": [1.0, 3.0, 10.0, 30.0], "intercept_l2": [0.3, 1.0, 3.0]},
}


def _config(params: dict[str, dict[str, Any]], *, variance: bool = True) -> gdmix.GDMixConfig:
    raw = example_config(False).model_dump()
    for c in raw["coordinates"]:
        c.update(params[c["name"]])
        if c["type"] == "random" and variance:
            c["variance"] = "full"
    raw["training"].update(n_passes=1, progress=False)
    return parse_config(raw)


def _auc(model: GDMixModel, frame: pd.DataFrame, upto: str | None = None) -> float:
    scores = model.score(frame)
    logit = scores[upto].to_numpy() if upto else scores["total"].to_numpy()
    return roc_auc(frame["label"].to_numpy(), logit)


def movielens(args: argparse.Namespace) -> None:
    data = load_movielens_100k()
    data = data.sort_values("timestamp", kind="stable").reset_index(drop=True)
    data["uid"] = np.arange(len(data))
    data["period"] = ((data["timestamp"] - EPOCH) // PERIOD_SECONDS).astype(int)
    periods = sorted(data["period"].unique())
    print(f"MovieLens-100K: {len(data)} ratings in {len(periods)} periods of 14 days")
    by = {p: data[data["period"] == p].reset_index(drop=True) for p in periods}

    def window(p: int) -> pd.DataFrame:
        return pd.concat([by[p - 2], by[p - 1]], ignore_index=True)

    # l2 chosen once on the first window's last 20% (by time), then fixed.
    first = window(periods[2])
    cut = int(0.8 * len(first))
    search = _config({n: g for n, g in GRID.items()})
    start = time.perf_counter()
    chosen = gdmix.fit(search, first.iloc[:cut], first.iloc[cut:]).metrics["params"]
    print(f"l2 chosen on the first window's last 20% in {time.perf_counter() - start:.1f}s:")
    params = {n: {k: v for k, v in p.items() if v is not None} for n, p in chosen.items()}
    print("  " + json.dumps(params))
    config = _config(params)

    tmp = Path(tempfile.mkdtemp(prefix="gdmix-refresh-"))
    seconds: dict[str, list[float]] = {"full": [], "partial": [], "incremental": []}
    start = time.perf_counter()
    base = gdmix.fit(config, first)
    seconds["full"].append(time.perf_counter() - start)
    stores = {s: ModelStore(tmp / s) for s in ("partial", "incremental")}
    for store in stores.values():
        store.publish(base.write_into, promote=True)
    schemes = ("static_fe", "static_fere", "full", "partial", "incremental")
    aucs: dict[str, list[float]] = {s: [] for s in schemes}
    test_periods = [p for p in periods[2:] if by[p]["label"].nunique() == 2]
    print(f"{'period':>6}{'rows':>7}{'static_fe':>11}{'static_fere':>13}{'full':>8}"
          f"{'partial':>9}{'incremental':>13}")  # fmt: skip
    for p in test_periods:
        test = by[p]
        if p != test_periods[0]:
            train = window(p)
            t = time.perf_counter()
            full = gdmix.fit(config, train)
            seconds["full"].append(time.perf_counter() - t)
            t = time.perf_counter()
            refresh(stores["partial"].root, train, mode="partial")
            seconds["partial"].append(time.perf_counter() - t)
            t = time.perf_counter()
            refresh(stores["incremental"].root, by[p - 1], mode="incremental")
            seconds["incremental"].append(time.perf_counter() - t)
        else:
            full = base
        row = {
            "static_fe": _auc(base, test, "global"),
            "static_fere": _auc(base, test),
            "full": _auc(full, test),
            "partial": _auc(GDMixModel.load(stores["partial"].root), test),
            "incremental": _auc(GDMixModel.load(stores["incremental"].root), test),
        }
        for k, v in row.items():
            aucs[k].append(v)
        print(f"{p:>6}{len(test):>7}{row['static_fe']:>11.4f}{row['static_fere']:>13.4f}"
              f"{row['full']:>8.4f}{row['partial']:>9.4f}{row['incremental']:>13.4f}")  # fmt: skip
    mean = {k: float(np.mean(v)) for k, v in aucs.items()}
    med = {k: statistics.median(v) for k, v in seconds.items()}
    print(f"{'mean':>13}{mean['static_fe']:>11.4f}{mean['static_fere']:>13.4f}"
          f"{mean['full']:>8.4f}{mean['partial']:>9.4f}{mean['incremental']:>13.4f}")  # fmt: skip
    print("median seconds per training: " + ", ".join(f"{k} {v:.2f}" for k, v in med.items()))
    result = {f"auc_{k}": round(v, 5) for k, v in mean.items()}
    result.update({f"seconds_{k}": round(v, 3) for k, v in med.items()})
    print(json.dumps(result))


# -- at scale -----------------------------------------------------------------------------


def _synthetic(n_entities: int, rows: int, seed: int, w: np.ndarray, beta: np.ndarray,
               entities: np.ndarray | None = None) -> pd.DataFrame:  # fmt: skip
    rng = np.random.default_rng(seed)
    ids = np.arange(n_entities) if entities is None else entities
    entity = np.repeat(ids, rows)
    rng.shuffle(entity)
    n = len(entity)
    d = w.shape[1]
    X = rng.standard_normal((n, d))
    F = rng.standard_normal((n, d))
    z = F @ beta + np.einsum("ij,ij->i", X, w[entity])
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int8)
    cols: dict[str, Any] = {"uid": np.arange(n) + seed * 10**9, "entity": entity}
    cols.update({f"x{j}": X[:, j] for j in range(d)})
    cols.update({f"f{j}": F[:, j] for j in range(d)})
    cols["label"] = y
    return pd.DataFrame(cols)


def scale(args: argparse.Namespace) -> None:
    n, d = args.entities, 10
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.5, (n, d))
    beta = rng.normal(0, 0.3, d)
    raw = {
        "data": {"uid": "uid"},
        "coordinates": [
            {"name": "global", "type": "fixed",
             "features": {"numeric": [f"f{j}" for j in range(d)]}},
            {"name": "per_entity", "type": "random", "entity": "entity", "l2": 1.0,
             "variance": "simple", "features": {"numeric": [f"x{j}" for j in range(d)]}},
        ],
        "training": {"progress": False, "n_passes": 1},
    }  # fmt: skip
    config = parse_config(raw)
    old = _synthetic(n, 20, 1, w, beta)
    touched = rng.choice(n, size=max(1, n // 10), replace=False)
    new_rows = max(1, round(2_000_000 * n / 1_000_000 / len(touched)))
    new = _synthetic(n, new_rows, 2, w, beta, entities=touched)
    held = _synthetic(n, 2, 3, w, beta, entities=touched)
    print(
        f"{n} entities x 20 rows ({len(old)} rows); new data: {len(new)} rows on "
        f"{len(touched)} entities; held out: {len(held)} rows"
    )
    tmp = Path(tempfile.mkdtemp(prefix="gdmix-refresh-scale-"))
    old_path, new_path = tmp / "old.parquet", tmp / "new.parquet"
    old.to_parquet(old_path, index=False)
    new.to_parquet(new_path, index=False)
    start = time.perf_counter()
    base = gdmix.fit(config, old_path)
    store = ModelStore(tmp / "store")
    store.publish(base.write_into, promote=True)
    seconds_base = time.perf_counter() - start
    del base
    start = time.perf_counter()
    refresh(store.root, new_path, mode="incremental")
    seconds_refresh = time.perf_counter() - start
    refreshed = GDMixModel.load(store.root)
    auc_refresh = _auc(refreshed, held)
    del refreshed
    both = pd.concat([old, new], ignore_index=True)
    del old
    start = time.perf_counter()
    full = gdmix.fit(copy.deepcopy(config), both)
    full.save(tmp / "full")
    seconds_full = time.perf_counter() - start
    auc_full = _auc(full, held)
    print(f"{'':<28}{'seconds':>9}{'held-out AUC':>14}")
    print(f"{'first training (20 rows/e)':<28}{seconds_base:>9.1f}")
    print(f"{'refresh, incremental':<28}{seconds_refresh:>9.1f}{auc_refresh:>14.4f}")
    print(f"{'full retrain on all rows':<28}{seconds_full:>9.1f}{auc_full:>14.4f}")
    print(f"refresh is {seconds_full / seconds_refresh:.1f}x faster than a full retrain")
    print(json.dumps({"seconds_refresh_1m": round(seconds_refresh, 2),
                      "seconds_full_1m": round(seconds_full, 2),
                      "auc_refresh": round(auc_refresh, 5), "auc_full": round(auc_full, 5),
                      "entities": n}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", action="store_true", help="the cost of a refresh at scale")
    parser.add_argument("--entities", type=int, default=1_000_000, help="with --scale")
    args = parser.parse_args()
    # New users and movies arrive every period: the low-coverage warning is expected here.
    logging.getLogger("gdmix").setLevel(logging.ERROR)
    os.environ.setdefault(
        "GDMIX_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    if args.scale:
        scale(args)
    else:
        movielens(args)


if __name__ == "__main__":
    main()
