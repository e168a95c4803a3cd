"""LightGBM reference on MovieLens-100K, and gdmix with a GBDT fixed effect.

Usage: ``GDMIX_DATA_DIR=/path/to/data python benchmarks/lightgbm_movielens.py [--seed 0]
[--n-threads N] [--max-rounds 3000]``. Prints tables, then one JSON line (the last line of
output) whose ``auc_lightgbm`` is the reference's test AUC.

Protocol (the core one of ``gdmix.examples.movielens``): ``load_movielens_100k`` and
``split_movielens(seed)``; hyper-parameters are chosen on the validation split, test is
scored once.

1. Plain LightGBM (``lightgbm.train``, binary objective) on ``user_id`` and ``movie_id``
   as categorical features plus the example's user features (age, gender, occupation as
   a categorical) and movie features (19 genres, release year). Early stopping on the
   validation AUC; a grid over ``num_leaves`` x ``learning_rate`` x ``min_data_in_leaf``,
   the point with the best validation AUC wins. The data is given to LightGBM as a pandas
   frame (ids as integers, occupation as a pandas category): nothing of gdmix's encoding.
2. gdmix: the example's tuned configuration (per-user and per-movie random effects with
   their ``l2`` / ``intercept_l2`` grids, up to 4 passes with early stopping) with its
   ``global`` logistic regression replaced by a ``gbdt`` fixed effect using the settings
   chosen in step 1, on (a) the example's global features, and (b) the same features plus
   the ids as categorical features (step 1's model, plus random effects). Test AUC after
   each coordinate is printed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from typing import Any

import lightgbm as lgb
import pandas as pd

from gdmix.config import parse_config
from gdmix.data.movielens import (
    MOVIE_NUMERIC,
    USER_CATEGORICAL,
    USER_NUMERIC,
    load_movielens_100k,
    split_movielens,
)
from gdmix.examples.movielens import EXAMPLE_STAGES, example_config
from gdmix.metrics import roc_auc
from gdmix.training import fit

IDS = ["user_id", "movie_id"]
NUMERIC = USER_NUMERIC + MOVIE_NUMERIC
CATEGORICAL = IDS + USER_CATEGORICAL
GRID = {
    "num_leaves": [15, 63],
    "learning_rate": [0.03, 0.1],
    "min_data_in_leaf": [20, 100],
}
SEED = 0


def lightgbm_frame(frame: pd.DataFrame, categories: dict[str, list[str]]) -> pd.DataFrame:
    """The LightGBM input: numeric columns, integer ids, occupation as a pandas category."""
    out = frame[NUMERIC + IDS].copy()
    for col, levels in categories.items():
        out[col] = pd.Categorical(frame[col], categories=levels)
    return out


def base_params(n_threads: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "objective": "binary",
        "metric": "auc",
        "seed": SEED,
        "deterministic": True,
        "force_col_wise": True,
        "verbosity": -1,
    }
    if n_threads is not None:
        params["num_threads"] = n_threads
    return params


def lightgbm_reference(
    tables: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
    n_threads: int | None,
    max_rounds: int,
    stopping: int,
) -> tuple[float, dict[str, Any], int]:
    """Grid search on validation; returns test AUC, chosen settings and tree count."""
    train, validation, test = tables
    categories = {c: sorted(train[c].unique().tolist()) for c in USER_CATEGORICAL}
    x_train, x_val, x_test = (lightgbm_frame(t, categories) for t in tables)
    print("Plain LightGBM: grid on validation (early stopping on validation AUC)")
    print(f"{'num_leaves':>10} {'lr':>6} {'min_leaf':>8} {'trees':>6} {'val AUC':>8} {'s':>6}")
    best: tuple[float, dict[str, Any], lgb.Booster] | None = None
    for leaves, lr, min_leaf in itertools.product(*GRID.values()):
        params = base_params(n_threads) | {
            "num_leaves": leaves,
            "learning_rate": lr,
            "min_data_in_leaf": min_leaf,
        }
        dtrain = lgb.Dataset(
            x_train, train["label"].to_numpy(float), categorical_feature=CATEGORICAL
        )
        dval = lgb.Dataset(
            x_val,
            validation["label"].to_numpy(float),
            reference=dtrain,
            categorical_feature=CATEGORICAL,
        )
        start = time.perf_counter()
        booster = lgb.train(
            params,
            dtrain,
            num_boost_round=max_rounds,
            valid_sets=[dval],
            callbacks=[lgb.early_stopping(stopping, first_metric_only=True, verbose=False)],
        )
        seconds = time.perf_counter() - start
        val_auc = booster.best_score["valid_0"]["auc"]
        print(
            f"{leaves:>10} {lr:>6g} {min_leaf:>8} {booster.best_iteration:>6} "
            f"{val_auc:>8.4f} {seconds:>6.1f}"
        )
        if best is None or val_auc > best[0]:
            best = (val_auc, {"num_leaves": leaves, "learning_rate": lr,
                              "min_data_in_leaf": min_leaf}, booster)  # fmt: skip
    assert best is not None
    val_auc, chosen, booster = best
    pred = booster.predict(x_test, raw_score=True, num_iteration=booster.best_iteration)
    auc = roc_auc(test["label"].to_numpy(), pred)
    print(f"chosen {chosen} ({booster.best_iteration} trees, validation AUC {val_auc:.4f})")
    print(f"LightGBM test AUC: {auc:.4f}\n")
    return auc, chosen, booster.best_iteration


def gdmix_gbdt(
    tables: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
    chosen: dict[str, Any],
    *,
    with_ids: bool,
    n_threads: int | None,
    max_rounds: int,
    stopping: int,
) -> tuple[list[float], float, int]:
    """The example's tuned config with a gbdt ``global``; test AUC after each coordinate."""
    train, validation, test = tables
    raw = example_config(True, n_threads=n_threads).model_dump(mode="json", exclude_none=True)
    categorical = (IDS if with_ids else []) + USER_CATEGORICAL
    raw["coordinates"][0] = {
        "name": "global",
        "type": "gbdt",
        "features": {"numeric": NUMERIC, "categorical": categorical},
        "n_estimators": max_rounds,
        "early_stopping_rounds": stopping,
        "seed": SEED,
        "params": {"metric": "auc"},
        **chosen,
    }
    config = parse_config(raw, where="lightgbm_movielens benchmark")
    start = time.perf_counter()
    model = fit(config, train, validation)
    seconds = time.perf_counter() - start
    metrics = model.evaluate(test)
    aucs = [metrics[f"auc_after@{name}"] for name, _ in EXAMPLE_STAGES]
    return aucs, seconds, model.metrics.get("best_pass", 0)


def main() -> None:
    """Run both and print the tables and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    parser.add_argument("--n-threads", type=int, default=None, help="LightGBM/numba threads")
    parser.add_argument("--max-rounds", type=int, default=3000, help="boosting rounds cap")
    parser.add_argument("--early-stopping", type=int, default=50, help="patience in rounds")
    args = parser.parse_args()

    tables = split_movielens(load_movielens_100k(), seed=args.seed)
    print(f"MovieLens-100K, split seed {args.seed}: " + ", ".join(
        f"{name} {len(t)}" for name, t in zip(("train", "validation", "test"), tables,
                                              strict=True)))  # fmt: skip
    print(f"LightGBM {lgb.__version__}\n")
    auc_ref, chosen, n_trees = lightgbm_reference(
        tables, args.n_threads, args.max_rounds, args.early_stopping
    )

    results: dict[str, list[float]] = {}
    print("gdmix: gbdt fixed effect + per-user + per-movie random effects (tuned example)")
    print(f"{'gbdt features':<28} {'FE':>7} {'+user':>7} {'+movie':>7} {'best pass':>9} {'s':>6}")
    for with_ids in (False, True):
        label = "example + user/movie ids" if with_ids else "example global features"
        aucs, seconds, best_pass = gdmix_gbdt(
            tables,
            chosen,
            with_ids=with_ids,
            n_threads=args.n_threads,
            max_rounds=args.max_rounds,
            stopping=args.early_stopping,
        )
        results["auc_gdmix_gbdt_ids" if with_ids else "auc_gdmix_gbdt"] = aucs
        row = " ".join(f"{a:>7.4f}" for a in aucs)
        print(f"{label:<28} {row} {best_pass:>9} {seconds:>6.1f}")
    print("(columns: test AUC after the fixed effect, + per-user, + per-movie)")
    print(
        json.dumps(
            {
                "auc_lightgbm": round(float(auc_ref), 6),
                "lightgbm_params": chosen,
                "lightgbm_trees": int(n_trees),
                **{k: [round(float(a), 6) for a in v] for k, v in results.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
