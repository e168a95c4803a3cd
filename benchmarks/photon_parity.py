"""Photon-ML parity on MovieLens-100K (issue 14): Avro data and Photon models.

Usage: ``GDMIX_DATA_DIR=/path/to/data python benchmarks/photon_parity.py [--seed 0]
[--reference] [--n-threads N]``. Prints a table, then one JSON line (the last line).

What it does, on ``split_movielens(seed)`` of MovieLens-100K:

1. Writes the train/validation/test tables as Parquet files and trains the example's
   tuned logistic model from them (``gdmix.examples.movielens.example_config(True)``:
   ``l2`` and ``intercept_l2`` searched on validation, up to 4 passes; ``--reference``
   takes the paper's reference config instead, for a quick run). ``auc_from_parquet`` is
   its test AUC.
2. Exports that model to Photon ``BayesianLinearModelAvro`` files
   (``gdmix.photon.export_model``), imports them back (``gdmix.photon.import_model``)
   and scores the test table again: ``avro_roundtrip_max_abs_diff`` is the largest
   difference of the total scores (the goal: at most 1e-9).
3. Writes the same three tables as Avro in Photon's GAME layout: ``response``, ``uid``,
   the user and movie ids in ``metadataMap``, and two feature bags, ``userFeatures``
   (``(age, "")``, ``(gender_m, "")``, ``(occupation, level)``) and ``movieFeatures``
   (``(genre_*, "")``, ``(year, "")``): the name/term mapping of the example's numeric
   and categorical columns (docs/photon.md), zeros left out. The same job (the same
   coordinates, hyper-parameters and search, with the features named as bags) is
   trained from the Avro files: ``auc_from_avro`` is its test AUC (the goal: equal to
   ``auc_from_parquet``; the designs are the same up to the order of their columns).
4. Imports the Photon files of step 2 with the bag features of step 3 and scores the
   Avro test records: ``imported_on_avro_max_abs_diff`` is the largest difference from
   the Parquet model's scores of the Parquet test table (a model exported from columns
   serves Photon-layout data).

5. ``task: linear`` on the raw rating (1-5): the example's three coordinates with ``l2``
   and ``intercept_l2`` searched on validation by RMSE (up to 4 passes);
   ``rmse_linear`` is the test RMSE after FE, FE+per-user and FE+per-user+per-movie.
   The baseline, fitted in the same run, is scikit-learn's ``Ridge`` on the same
   features plus one-hot user and movie ids (random intercepts as fixed effects), its
   ``alpha`` chosen on validation: ``rmse_baseline`` (the goal: the mixed model's RMSE
   below it).
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.linear_model import Ridge

from gdmix.config import GDMixConfig, parse_config
from gdmix.data.io import read_table, write_table
from gdmix.data.movielens import (
    MOVIE_NUMERIC,
    USER_CATEGORICAL,
    USER_NUMERIC,
    load_movielens_100k,
    split_movielens,
)
from gdmix.examples.movielens import example_config
from gdmix.photon import export_model, import_model
from gdmix.photon.schemas import training_example_schema
from gdmix.training import fit

SPLITS = ("train", "validation", "test")
BAGS = {"global": ["userFeatures", "movieFeatures"], "per_user": ["movieFeatures"],
        "per_movie": ["userFeatures"]}  # fmt: skip


def _numeric_bag(columns: list[str], values: np.ndarray) -> list[dict[str, Any]]:
    """Numeric columns as bag features ``(column, "")``, zeros left out."""
    return [
        {"name": c, "term": "", "value": float(v)}
        for c, v in zip(columns, values, strict=True)
        if v != 0
    ]


def photon_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as GAME training records (see the module's doc)."""
    user_num = frame[USER_NUMERIC].to_numpy(dtype=np.float64)
    movie_num = frame[MOVIE_NUMERIC].to_numpy(dtype=np.float64)
    occupation = frame[USER_CATEGORICAL[0]].astype(str).tolist()
    records = []
    for i, (uid, label, user, movie) in enumerate(
        zip(frame["uid"], frame["label"], frame["user_id"], frame["movie_id"], strict=True)
    ):
        user_bag = _numeric_bag(USER_NUMERIC, user_num[i])
        user_bag.append({"name": USER_CATEGORICAL[0], "term": occupation[i], "value": 1.0})
        movie_bag = _numeric_bag(MOVIE_NUMERIC, movie_num[i])
        records.append(
            {
                "uid": str(uid),
                "response": float(label),
                "userFeatures": user_bag,
                "movieFeatures": movie_bag,
                "metadataMap": {"user_id": str(user), "movie_id": str(movie)},
                "weight": None,
                "offset": None,
            }
        )
    return records


def write_avro(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` as GAME records with the project's schema."""
    schema = training_example_schema(response="response", bags=["userFeatures", "movieFeatures"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fo:
        fastavro.writer(fo, fastavro.parse_schema(schema), photon_records(frame), codec="deflate")
    return path


def avro_config(config: GDMixConfig) -> GDMixConfig:
    """``config`` with every coordinate's features named as the Avro bags."""
    raw = config.model_dump(mode="json", exclude_none=True)
    raw["data"] = {"label": "response", "uid": "uid"}
    for c in raw["coordinates"]:
        c["features"] = {"bags": BAGS[c["name"]]}
    return parse_config(raw, where="photon parity (Avro)")


def _one_hot_design(frame: pd.DataFrame, levels: dict[str, list[Any]]) -> sp.csr_matrix:
    """Numeric features, then one one-hot block per column of ``levels`` (unseen: zeros)."""
    blocks = [sp.csr_matrix(frame[USER_NUMERIC + MOVIE_NUMERIC].to_numpy(np.float64))]
    for col, values in levels.items():
        codes = pd.Index(values).get_indexer(frame[col])
        ok = codes >= 0
        rows = np.flatnonzero(ok)
        blocks.append(sp.csr_matrix((np.ones(len(rows)), (rows, codes[ok])),
                                    shape=(len(frame), len(values))))  # fmt: skip
    return sp.hstack(blocks, format="csr")


def linear_rmse(
    tables: dict[str, pd.DataFrame], n_threads: int | None
) -> tuple[list[float], float, float, float]:
    """``task: linear`` on the rating: test RMSE after each coordinate, the Ridge
    baseline's test RMSE and alpha, and gdmix's training seconds."""
    raw = copy.deepcopy(example_config(True, n_threads=n_threads).model_dump(mode="json"))
    raw["task"] = "linear"
    raw["data"]["label"] = "rating"
    raw["training"].pop("metric", None)  # the task's default: rmse
    for c in raw["coordinates"]:
        c.pop("task", None)
    raw["data"].pop("task", None)
    start = time.perf_counter()
    model = fit(parse_config(raw), tables["train"], tables["validation"])
    seconds = time.perf_counter() - start
    metrics = model.evaluate(tables["test"])
    rmse = [metrics[f"rmse_after@{c.name}"] for c in model.coordinates]

    levels = {c: sorted(tables["train"][c].unique()) for c in [*USER_CATEGORICAL, "user_id",
                                                               "movie_id"]}  # fmt: skip
    X = {s: _one_hot_design(tables[s], levels) for s in SPLITS}
    y = {s: tables[s]["rating"].to_numpy(np.float64) for s in SPLITS}
    best: tuple[float, float] | None = None
    for alpha in (0.3, 1.0, 3.0, 10.0, 30.0, 100.0):
        pred = Ridge(alpha=alpha).fit(X["train"], y["train"]).predict(X["validation"])
        err = float(np.sqrt(np.mean((pred - y["validation"]) ** 2)))
        if best is None or err < best[0]:
            best = (err, alpha)
    assert best is not None
    pred = Ridge(alpha=best[1]).fit(X["train"], y["train"]).predict(X["test"])
    baseline = float(np.sqrt(np.mean((pred - y["test"]) ** 2)))
    return rmse, baseline, best[1], seconds


def main() -> None:
    """Run the benchmark and print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", action="store_true", help="reference config (quick)")
    parser.add_argument("--n-threads", type=int, default=None)
    args = parser.parse_args()

    tables = dict(zip(SPLITS, split_movielens(load_movielens_100k(), seed=args.seed), strict=True))
    config = example_config(not args.reference, n_threads=args.n_threads)
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="photon-parity-") as tmp:
        root = Path(tmp)
        parquet = {s: write_table(tables[s], root / f"{s}.parquet") for s in SPLITS}
        start = time.perf_counter()
        avro = {s: write_avro(tables[s], root / "avro" / s / "part-00000.avro") for s in SPLITS}
        write_seconds = time.perf_counter() - start

        start = time.perf_counter()
        from_parquet = fit(config, parquet["train"], parquet["validation"])
        parquet_seconds = time.perf_counter() - start
        auc_parquet = from_parquet.evaluate(parquet["test"])["auc"]
        rows.append(("trained from Parquet: test AUC", f"{auc_parquet:.6f}"))
        rows.append(("  training seconds", f"{parquet_seconds:.1f}"))

        start = time.perf_counter()
        out = export_model(from_parquet, root / "photon")
        back = import_model(out)
        roundtrip_seconds = time.perf_counter() - start
        before = from_parquet.score(parquet["test"])["total"].to_numpy()
        after = back.score(parquet["test"])["total"].to_numpy()
        roundtrip = float(np.max(np.abs(after - before)))
        n_models = sum(
            int(c.active.sum()) if c.kind == "random" else 1 for c in from_parquet.coordinates
        )
        rows.append(("Photon Avro round trip: max |score diff|", f"{roundtrip:.3g}"))
        rows.append(("  models written and read, seconds", f"{n_models}, {roundtrip_seconds:.1f}"))

        job = avro_config(config)
        start = time.perf_counter()
        from_avro = fit(job, avro["train"].parent, avro["validation"].parent)
        avro_seconds = time.perf_counter() - start
        auc_avro = from_avro.evaluate(avro["test"].parent)["auc"]
        rows.append(("trained from Avro (GAME layout): test AUC", f"{auc_avro:.6f}"))
        rows.append(("  training seconds (reading Avro included)", f"{avro_seconds:.1f}"))
        rows.append(("  |AUC(Avro) - AUC(Parquet)|", f"{abs(auc_avro - auc_parquet):.3g}"))
        rows.append(("  Avro files written, seconds", f"{write_seconds:.1f}"))

        served = import_model(out, config=job)
        test_avro = read_table(avro["test"])
        on_avro = served.score(test_avro)["total"].to_numpy()
        assert list(test_avro["uid"].astype(np.int64)) == list(tables["test"]["uid"])
        imported_diff = float(np.max(np.abs(on_avro - before)))
        rows.append(("Photon files scoring Avro records: max |diff|", f"{imported_diff:.3g}"))

    rmse_linear, rmse_baseline, ridge_alpha, linear_seconds = linear_rmse(tables, args.n_threads)
    rows.append(("task: linear on the rating: test RMSE FE", f"{rmse_linear[0]:.4f}"))
    rows.append(("  FE+per-user", f"{rmse_linear[1]:.4f}"))
    rows.append(("  FE+per-user+per-movie", f"{rmse_linear[2]:.4f}"))
    rows.append(("  training seconds (search included)", f"{linear_seconds:.1f}"))
    rows.append((f"scikit-learn Ridge, one-hot ids (alpha {ridge_alpha:g}): RMSE",
                 f"{rmse_baseline:.4f}"))  # fmt: skip

    width = max(len(r[0]) for r in rows)
    print(f"MovieLens-100K, seed {args.seed}, {'reference' if args.reference else 'tuned'} config")
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    print(
        json.dumps(
            {
                "avro_roundtrip_max_abs_diff": roundtrip,
                "auc_from_avro": auc_avro,
                "auc_from_parquet": auc_parquet,
                "imported_on_avro_max_abs_diff": imported_diff,
                "rmse_linear": rmse_linear,
                "rmse_baseline": rmse_baseline,
            }
        )
    )


if __name__ == "__main__":
    main()
