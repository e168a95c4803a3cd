"""The same random-effect job on the local engine, a 2-worker Dask LocalCluster and the
streaming engine.

Usage::

    python benchmarks/engines.py [--entities 1000000] [--rows 20] [--workers 2]

Synthetic data (``--entities`` entities x ``--rows`` rows x 10 features, known
coefficients) is written once as Parquet files; every engine reads the same files and
trains one random-effect coordinate for one pass. Wall times include reading the data
(and, for Dask, starting nothing: the cluster is started before the clock; the streaming
engine runs with a 1 GB memory budget, so its buckets are laid out on disk). The last
line is JSON: ``seconds_local``, ``seconds_dask``, ``seconds_streaming``,
``max_abs_coef_diff`` (the largest difference of either engine from the local one).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import gdmix
from gdmix.config import parse_config
from gdmix.engines.dask_engine import connect, fit_dask


def write_data(folder: Path, n_entities: int, rows: int, d: int, n_files: int) -> int:
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.5, (n_entities, d))
    n = n_entities * rows
    entity = rng.permutation(np.repeat(np.arange(n_entities), rows))
    for i, idx in enumerate(np.array_split(np.arange(n), n_files)):
        X = rng.standard_normal((len(idx), d))
        z = np.einsum("ij,ij->i", X, w[entity[idx]])
        y = (rng.random(len(idx)) < 1 / (1 + np.exp(-z))).astype(np.int8)
        cols = {"uid": pa.array(idx), "entity": pa.array(entity[idx])}
        cols.update({f"x{j}": pa.array(X[:, j]) for j in range(d)})
        cols["label"] = pa.array(y)
        pq.write_table(pa.table(cols), folder / f"part-{i:03d}.parquet")
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    d = 10
    config = parse_config({
        "data": {"uid": "uid"},
        "coordinates": [{"name": "re", "type": "random", "entity": "entity", "l2": 1.0,
                         "features": {"numeric": [f"x{j}" for j in range(d)]}}],
        "training": {"n_passes": 1, "progress": False},
    })  # fmt: skip
    with tempfile.TemporaryDirectory(dir=os.environ.get("GDMIX_BENCH_DIR")) as tmp:
        folder = Path(tmp) / "data"
        folder.mkdir()
        n = write_data(folder, args.entities, args.rows, d, n_files=8)
        print(f"{args.entities:,} entities x {args.rows} rows x {d} features = {n:,} rows, "
              f"8 Parquet files")  # fmt: skip

        start = time.perf_counter()
        local = gdmix.fit(config, str(folder))
        t_local = time.perf_counter() - start

        client = connect(None, n_workers=args.workers, threads_per_worker=1)
        try:
            start = time.perf_counter()
            remote = fit_dask(config, str(folder), client=client)
            t_dask = time.perf_counter() - start
        finally:
            cluster = client.cluster
            client.close()
            cluster.close()

        streaming_config = config.model_copy(update={"training": config.training.model_copy(
            update={"engine": "streaming", "memory_budget_gb": 1.0,
                    "streaming": config.training.streaming.model_copy(
                        update={"work_dir": str(Path(tmp) / "work")})})})  # fmt: skip
        start = time.perf_counter()
        streamed = gdmix.fit(streaming_config, str(folder))
        t_streaming = time.perf_counter() - start
    a = local["re"]
    diff = 0.0
    for other in (remote["re"], streamed["re"]):
        order = other.entity_ids.get_indexer(a.entity_ids)
        assert (order >= 0).all()
        diff = max(diff, float(np.abs(a.coef - other.coef[order]).max()),
                   float(np.abs(a.intercept - other.intercept[order]).max()))  # fmt: skip
    buckets = streamed.metrics["streaming"]["n_buckets"]["re"]
    print(f"\n{'engine':<44}{'seconds':>9}")
    print(f"{'local (one process, 2 numba threads)':<44}{t_local:>9.1f}")
    print(f"{f'dask LocalCluster ({args.workers} workers x 1 thread)':<44}{t_dask:>9.1f}")
    print(f"{f'streaming (1 GB budget: {buckets} buckets on disk)':<44}{t_streaming:>9.1f}")
    print(f"max |coefficient difference| from local: {diff:.1e}")
    print(json.dumps({"seconds_local": t_local, "seconds_dask": t_dask,
                      "seconds_streaming": t_streaming, "max_abs_coef_diff": diff}))  # fmt: skip


if __name__ == "__main__":
    main()
