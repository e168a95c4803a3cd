"""Random-effect engine at scale: gdmix's compiled solver against a per-entity scipy loop.

Synthetic data with known true coefficients (logistic model, features ~ N(0, 1)).

Usage::

    python benchmarks/random_effects.py            # full run (10M-entity streaming included)
    python benchmarks/random_effects.py --quick    # about a minute: the speed-up table only

Sections: (1) entities/s per core, gdmix vs ``scipy.optimize`` L-BFGS per entity (the
reference implementation's method), both on one core, and their largest relative
objective difference; (2) 1,000,000 entities x 20 rows x 10 features on all cores:
training (grouping included) and scoring wall time; (3) 10,000,000 entities /
100,000,000 rows streamed from Parquet (generated streaming) with peak resident
memory; (4) a wide sparse shard (d = 10,000, ~30 non-zeros per entity); (5) recovery
of the true coefficients as rows per entity grow. The last line is JSON.
"""

from __future__ import annotations

import os

# One BLAS thread for the scipy loop: with two, every tiny per-entity solve pays for
# waking a second thread (~90 ms instead of ~1 ms) and the comparison means nothing.
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import scipy.optimize  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from gdmix.config import DataConfig, parse_config  # noqa: E402
from gdmix.data.layout import group_rows  # noqa: E402
from gdmix.effects.random_table import DENSE_MAX_FEATURES  # noqa: E402
from gdmix.engines.streaming import fit_random_effect_streaming  # noqa: E402
from gdmix.solvers.newton import score_entities, solve_entities  # noqa: E402

L2 = 1.0


def simulate(n_entities: int, rows: int, d: int, seed: int) -> tuple:
    """Entities of ``rows`` rows each, rows shuffled; returns (X, y, codes, true coefs)."""
    rng = np.random.default_rng(seed)
    codes = rng.permutation(np.repeat(np.arange(n_entities, dtype=np.int64), rows))
    X = rng.standard_normal((len(codes), d))
    w = rng.normal(0, 0.5, (n_entities, d))
    b = rng.normal(0, 0.5, n_entities)
    z = np.einsum("ij,ij->i", X, w[codes]) + b[codes]
    y = (rng.random(len(codes)) < 1 / (1 + np.exp(-z))).astype(np.float64)
    return X, y, codes, w, b


def group(X: sp.csr_matrix, y: np.ndarray, codes: np.ndarray) -> tuple:
    """What a random-effect coordinate does once per training table: group rows by
    entity and store them sorted, so that every entity's rows are contiguous."""
    layout = group_rows(codes)
    return X[layout.perm], y[layout.perm], layout


def solve_sorted(Xs: sp.csr_matrix, ys: np.ndarray, layout, n: int) -> tuple:
    d = Xs.shape[1]
    # As a random-effect coordinate stores them: dense rows, or CSR rows for wide shards.
    coef = sp.csr_matrix((n, d)) if d > DENSE_MAX_FEATURES else np.zeros((n, d))
    icpt = np.zeros(n)
    ones, zeros = np.ones(len(ys)), np.zeros(len(ys))
    rows = np.arange(len(ys), dtype=np.int64)
    stats = solve_entities(Xs, rows, layout.starts, ys, ones, zeros, np.arange(n), coef, icpt,
                           l2=L2, intercept_l2=L2)  # fmt: skip
    return (stats.coef if stats.coef is not None else coef), icpt


def gdmix_solve(X: sp.csr_matrix, y: np.ndarray, codes: np.ndarray, n: int) -> tuple:
    Xs, ys, layout = group(X, y, codes)
    coef, icpt = solve_sorted(Xs, ys, layout, n)
    return coef, icpt, layout


def objective(theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """The per-entity MAP objective (l2 on coefficients and intercept) and its gradient."""
    z = X @ theta[:-1] + theta[-1]
    p = 1 / (1 + np.exp(-z))
    f = np.sum(np.logaddexp(0, z) - y * z) + 0.5 * L2 * theta @ theta
    r = p - y
    return f, np.append(X.T @ r, r.sum()) + L2 * theta


def scipy_loop(X: np.ndarray, y: np.ndarray, layout, entities: range) -> np.ndarray:
    out = np.zeros((len(entities), X.shape[1] + 1))
    with threadpool_limits(1):
        for i, e in enumerate(entities):
            rows = layout.perm[layout.starts[e] : layout.starts[e + 1]]
            res = scipy.optimize.minimize(objective, np.zeros(X.shape[1] + 1), jac=True,
                                          args=(X[rows], y[rows]), method="L-BFGS-B")  # fmt: skip
            out[i] = res.x
    return out


def speed_vs_scipy(quick: bool) -> dict:
    n, n_scipy = (100_000, 1_000) if quick else (400_000, 3_000)
    X, y, codes, _, _ = simulate(n, 20, 10, 0)
    Xs = sp.csr_matrix(X)
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    gdmix_solve(Xs[:2000], y[:2000], codes[:2000] % 100, 100)  # compile / load cache
    sorted_X, sorted_y, layout = group(Xs, y, codes)  # timed in section 2
    start = time.perf_counter()
    coef, icpt = solve_sorted(sorted_X, sorted_y, layout, n)
    t_gdmix = time.perf_counter() - start
    numba.set_num_threads(previous)
    start = time.perf_counter()
    ref = scipy_loop(X, y, layout, range(n_scipy))
    t_scipy = time.perf_counter() - start
    diffs = np.empty(n_scipy)
    for e in range(n_scipy):
        rows = layout.perm[layout.starts[e] : layout.starts[e + 1]]
        f_ref = objective(ref[e], X[rows], y[rows])[0]
        f_ours = objective(np.append(coef[e], icpt[e]), X[rows], y[rows])[0]
        diffs[e] = (f_ours - f_ref) / max(1.0, abs(f_ref))
    worst = float(np.abs(diffs).max())
    rate_g, rate_s = n / t_gdmix, n_scipy / t_scipy
    print("\n1. Entities/s per core, 20 rows x 10 features, l2 = 1 (both on one core)")
    print(f"{'solver':<44}{'entities':>10}{'entities/s':>13}")
    print(f"{'gdmix (compiled lockstep Newton, 1 thread)':<44}{n:>10}{rate_g:>13,.0f}")
    print(f"{'scipy L-BFGS-B per entity (1 BLAS thread)':<44}{n_scipy:>10}{rate_s:>13,.0f}")
    print(f"speed-up: {rate_g / rate_s:.0f}x; largest relative objective difference "
          f"|f_gdmix - f_scipy| / max(1, |f_scipy|): {worst:.2e} (gdmix lower on "
          f"{np.mean(diffs < 0):.0%} of entities, higher on {np.mean(diffs > 0):.0%})")  # fmt: skip
    return {"speedup_vs_scipy": rate_g / rate_s, "max_rel_objective_diff": worst}


def one_million() -> dict:
    n = 1_000_000
    X, y, codes, _, _ = simulate(n, 20, 10, 1)
    Xs = sp.csr_matrix(X)
    del X
    start = time.perf_counter()
    coef, icpt, layout = gdmix_solve(Xs, y, codes, n)
    t_train = time.perf_counter() - start
    start = time.perf_counter()
    score_entities(Xs, layout.codes, coef, icpt)
    t_score = time.perf_counter() - start
    print(f"\n2. 1,000,000 entities x 20 rows x 10 features, {numba.get_num_threads()} threads")
    print(f"train (grouping included): {t_train:.1f} s; score 20M rows: {t_score:.2f} s")
    return {"seconds_train_1m": t_train, "seconds_score_1m": t_score}


def generate_parquet(folder: Path, n_entities: int, n_rows: int, d: int, chunk: int) -> None:
    """Write the data chunk by chunk: entity ids uniform, so an entity's rows are spread."""
    rng = np.random.default_rng(2)
    w = rng.normal(0, 0.5, (n_entities, d)).astype(np.float32)
    b = rng.normal(0, 0.5, n_entities).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    for i, lo in enumerate(range(0, n_rows, chunk)):
        m = min(chunk, n_rows - lo)
        ent = rng.integers(0, n_entities, m)
        X = rng.standard_normal((m, d), dtype=np.float32)
        z = np.einsum("ij,ij->i", X, w[ent]) + b[ent]
        y = (rng.random(m, dtype=np.float32) < 1 / (1 + np.exp(-z))).astype(np.int8)
        cols = {"uid": pa.array(np.arange(lo, lo + m)), "entity": pa.array(ent)}
        cols.update({f"x{j}": pa.array(X[:, j]) for j in range(d)})
        cols["label"] = pa.array(y)
        pq.write_table(pa.table(cols), folder / f"part-{i:05d}.parquet")


def stream_child(n_entities: int, n_rows: int, work: Path) -> None:
    """Runs in its own process so that its peak memory is its own."""
    start = time.perf_counter()
    generate_parquet(work / "data", n_entities, n_rows, 10, 2_000_000)
    t_gen = time.perf_counter() - start
    cfg = parse_config(
        {
            "coordinates": [
                {
                    "name": "re",
                    "type": "random",
                    "entity": "entity",
                    "features": {"numeric": [f"x{j}" for j in range(10)]},
                }
            ]
        }
    )
    res = fit_random_effect_streaming(work / "data", cfg.coordinates[0],
                                      DataConfig(label="label", uid="uid"), work / "model",
                                      work_dir=work / "work", memory_budget_gb=4.0,
                                      progress=False)  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"seconds_generate": t_gen, "seconds_partition": res.seconds_partition,
                      "seconds_solve": res.seconds_solve, "n_buckets": res.n_buckets,
                      "n_entities": res.n_entities, "peak_rss_gb": peak}))  # fmt: skip


def ten_million(n_entities: int, n_rows: int) -> dict:
    with tempfile.TemporaryDirectory(dir=os.environ.get("GDMIX_BENCH_DIR")) as tmp:
        out = subprocess.run(
            [sys.executable, __file__, "--stream-child", str(n_entities), str(n_rows), tmp],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\n3. {n_entities:,} entities / {n_rows:,} rows x 10 features, streamed from Parquet")
    print(f"generate {r['seconds_generate']:.0f} s; partition into {r['n_buckets']} buckets "
          f"{r['seconds_partition']:.0f} s; solve + score + write {r['seconds_solve']:.0f} s; "
          f"entities {r['n_entities']:,}; peak RSS {r['peak_rss_gb']:.2f} GB")  # fmt: skip
    return {"peak_rss_gb_10m": r["peak_rss_gb"], "seconds_stream_10m": r["seconds_partition"]
            + r["seconds_solve"]}  # fmt: skip


def wide_sparse() -> dict:
    n, d, rows, per_row = 100_000, 10_000, 10, 3
    rng = np.random.default_rng(3)
    codes = np.repeat(np.arange(n), rows)
    pool = rng.integers(0, d, (n, 10))  # each entity draws its features from 10 columns
    cols = pool[codes[:, None], rng.integers(0, 10, (len(codes), per_row))]
    vals = rng.standard_normal(cols.shape)
    X = sp.csr_matrix((vals.ravel(), cols.ravel(), np.arange(0, cols.size + 1, per_row)),
                      shape=(len(codes), d))  # fmt: skip
    X.sum_duplicates()
    y = (rng.random(len(codes)) < 0.5).astype(np.float64)
    small = codes < 1000
    gdmix_solve(X[small], y[small], codes[small], 1000)  # compile / load the wide kernels
    start = time.perf_counter()
    gdmix_solve(X, y, codes, n)
    t = time.perf_counter() - start
    print(f"\n4. Wide sparse shard: d = {d:,}, {n:,} entities x {rows} rows, "
          f"~{X.nnz / n:.0f} non-zeros per entity: {n / t:,.0f} entities/s")  # fmt: skip
    return {"wide_sparse_entities_per_s": n / t}


def recovery() -> dict:
    print("\n5. Recovery of true coefficients (10 features, l2 = 1)")
    print(f"{'rows per entity':>16}{'corr(coef)':>12}{'corr(intercept)':>17}")
    out = {}
    for rows in (5, 10, 20, 50, 100, 200):
        X, y, codes, w, b = simulate(20_000, rows, 10, 4)
        coef, icpt, _ = gdmix_solve(sp.csr_matrix(X), y, codes, 20_000)
        c1 = np.corrcoef(coef.ravel(), w.ravel())[0, 1]
        c2 = np.corrcoef(icpt, b)[0, 1]
        print(f"{rows:>16}{c1:>12.3f}{c2:>17.3f}")
        out[rows] = c1
    return {"recovery_corr": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="speed-up table only (~1 min)")
    parser.add_argument("--entities-10m", type=int, default=10_000_000)
    parser.add_argument("--rows-10m", type=int, default=100_000_000)
    parser.add_argument("--stream-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stream_child:
        stream_child(int(args.stream_child[0]), int(args.stream_child[1]),
                     Path(args.stream_child[2]))  # fmt: skip
        return
    print(
        f"gdmix random-effect benchmark; {os.cpu_count()} cores, "
        f"{numba.get_num_threads()} numba threads"
    )
    result = speed_vs_scipy(args.quick)
    if not args.quick:
        result.update(one_million())
        result.update(wide_sparse())
        result.update(recovery())
        result.update(ten_million(args.entities_10m, args.rows_10m))
    keys = ["speedup_vs_scipy", "max_rel_objective_diff", "seconds_train_1m",
            "seconds_score_1m", "peak_rss_gb_10m"]  # fmt: skip
    print(json.dumps({k: result[k] for k in keys if k in result}))


if __name__ == "__main__":
    main()
