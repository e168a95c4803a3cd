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

Not here yet: ``rmse_linear`` and ``rmse_baseline`` (MovieLens with ``task: linear`` on
the raw rating), which come with the task types of issue 14.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pandas as pd

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
            }
        )
    )


if __name__ == "__main__":
    main()
