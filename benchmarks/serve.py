"""Online scoring under load while new versions are published: ``gdmix serve`` against a
service that calls ``model.score(pandas.DataFrame)`` per request.

Usage::

    python benchmarks/serve.py [--users 1000000] [--items 100000] [--requests 100000]
        [--concurrency 2] [--publish-every 1.0] [--publisher-nice 10]
        [--entities-10m 10000000] [--seed 0]

What it does, on 127.0.0.1 only:

1. Builds a model of ``--users`` users and ``--items`` items (a fixed effect on 4 numeric
   features and a categorical, a per-user random effect on the 4 features, a per-item one
   on 2; coefficients drawn at random, seeded) and publishes it as version 1 of a store.
2. Starts ``gdmix serve --store`` in its own process and drives it with a bounded,
   closed-loop load generator in this process: ``--concurrency`` keep-alive connections
   send ``--requests`` requests in all, each one user (2% unseen) and 10 candidate items
   (2% unseen) with their features. Meanwhile a third process publishes a refreshed
   version (every per-user and per-item intercept and slope moved, the fixed effect kept)
   every ``--publish-every`` seconds, at CPU priority ``--publisher-nice`` (a batch job
   beside a latency-bound service); the service swaps each one in. A request fails when
   its answer is not a 200 with one total per candidate. The load average of the machine
   is printed, since other work on it shows in the tail latencies.
3. Runs the baseline the same way (fewer requests, no publisher): a Starlette service on
   the same uvicorn whose ``POST /score`` builds a ``pandas.DataFrame`` of the rows and
   calls ``GDMixModel.score`` on it.
4. Saves a version with ``--entities-10m`` users and times how long a fresh process takes
   to load and check it for serving (memory-mapped tables).

Prints a table; the last line is JSON: ``{"requests", "failed", "swaps", "rps", "p50_ms",
"p99_ms", "baseline_p99_ms", "seconds_load_10m"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

N_CANDIDATES = 10
NUMERIC = ["x0", "x1", "x2", "x3"]
DEVICES = ["android", "ios", "web"]


# -- the model ---------------------------------------------------------------------------


def build_model(n_users: int, n_items: int, seed: int) -> Any:
    """A model of the benchmark's shape with random coefficients (no training)."""
    from gdmix.config import DataConfig, FeatureConfig, FixedEffectConfig, RandomEffectConfig
    from gdmix.data.features import FeatureIndex
    from gdmix.effects.fixed_linear import FixedLinearEffect
    from gdmix.effects.random_effect import RandomEffect
    from gdmix.model import GDMixModel

    rng = np.random.default_rng(seed)
    features = FeatureConfig(numeric=NUMERIC, categorical=["device"])
    fixed = FixedLinearEffect(FixedEffectConfig(name="global", features=features))
    fixed.features = FeatureIndex(numeric=list(NUMERIC), categorical={"device": sorted(DEVICES)})
    fixed.coef = rng.normal(0, 0.5, fixed.features.n_features)
    fixed.intercept, fixed.params, fixed.fitted = -1.0, {"l2": 1.0}, True
    coords: list[Any] = [fixed]
    for name, entity, n, feats in (("per_user", "user_id", n_users, NUMERIC),
                                   ("per_item", "item_id", n_items, NUMERIC[:2])):  # fmt: skip
        config = RandomEffectConfig(name=name, entity=entity,
                                    features=FeatureConfig(numeric=feats))  # fmt: skip
        coord = RandomEffect(config)
        coord.features = FeatureIndex(numeric=list(feats))
        coord.entity_ids = pd.Index(np.arange(n, dtype=np.int64))
        coord.coef = rng.normal(0, 0.3, (n, len(feats)))
        coord.intercept = rng.normal(0, 0.5, n)
        coord.n_rows = np.full(n, 20, dtype=np.int64)
        coord.has_model = np.ones(n, dtype=bool)
        coord.entity_age = np.zeros(n, dtype=np.int64)
        coord.key_kind, coord.params, coord.fitted = "int", {"l2": 1.0, "intercept_l2": None}, True
        coord.train_coverage = 1.0
        coords.append(coord)
    kinds = {**{c: "number" for c in NUMERIC}, "device": "string"}
    return GDMixModel(coords, DataConfig(), column_kinds=kinds, lineage={"mode": "benchmark"})


def refreshed(model: Any, rng: np.random.Generator) -> None:
    """Move every random-effect coefficient a little (a refresh's new version)."""
    for name in ("per_user", "per_item"):
        coord = model[name]
        coord.intercept = coord.intercept + rng.normal(0, 0.01, coord.intercept.shape)
        coord.coef = coord.coef + rng.normal(0, 0.01, coord.coef.shape)


# -- roles run in their own processes -------------------------------------------------------


def run_publisher(store: str, every: float, seed: int, users: int, items: int, nice: int) -> None:
    """Publish a refreshed version every ``every`` seconds until killed, at CPU priority
    ``nice`` (a batch job beside a latency-bound service)."""
    import gdmix

    os.nice(nice)

    model = build_model(users, items, seed)
    target = gdmix.ModelStore(store)
    rng = np.random.default_rng(seed + 1)
    n = 0
    while True:
        start = time.perf_counter()
        refreshed(model, rng)
        version = target.publish(model.write_into, promote=True, reason="benchmark refresh")
        target.gc(keep=4)
        n += 1
        spent = time.perf_counter() - start
        print(json.dumps({"published": version, "seconds": round(spent, 3)}), flush=True)
        time.sleep(max(0.0, every - spent))


def run_baseline(model_dir: str, port: int) -> None:
    """A service that answers POST /score with ``model.score(pandas.DataFrame(rows))``."""
    import logging

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from gdmix.model import GDMixModel

    logging.getLogger("gdmix").setLevel(logging.ERROR)  # no coverage warnings per request
    model = GDMixModel.load(model_dir)

    async def score(request: Request) -> Response:
        body = json.loads(await request.body())
        context = body.get("context") or {}
        frame = pd.DataFrame([{**context, **row} for row in body["rows"]])
        scores = model.score(frame)
        total = scores["total"].to_numpy()
        payload = {
            "scores": {c.name: scores[c.name].tolist() for c in model.coordinates},
            "total": total.tolist(),
            "probability": (1 / (1 + np.exp(-total))).tolist(),
        }
        return Response(json.dumps(payload), media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response('{"status": "ok"}', media_type="application/json")

    app = Starlette(routes=[Route("/score", score, methods=["POST"]), Route("/healthz", healthz)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _resident_mib() -> float:
    """Resident memory of this process (MiB): pages of mapped files it touched included."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_load_once(path: str, warm: str) -> None:
    """Time loading ``path`` for serving in this fresh process (after a small warm-up
    load that brings the compiled kernels in from the cache)."""
    from gdmix.serving import load_serving_model

    load_serving_model(warm)
    rss = _resident_mib()
    start = time.perf_counter()
    model = load_serving_model(path)
    seconds = time.perf_counter() - start
    grown = _resident_mib() - rss
    entities = sum(len(s.table.entities) for s in model.scorers if hasattr(s, "table"))
    print(json.dumps({"seconds": seconds, "entities": entities, "rss_mib": grown}))


# -- load generator ------------------------------------------------------------------------


def make_bodies(n: int, users: int, items: int, seed: int) -> list[bytes]:
    """``n`` request bodies: one user (2% unseen) and 10 candidate items (2% unseen)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        user = int(rng.integers(0, users)) if rng.random() > 0.02 else users + 7
        u = rng.normal(size=2).round(4).tolist()
        context = {"user_id": user, "x0": u[0], "x1": u[1],
                   "device": DEVICES[int(rng.integers(0, 3))]}  # fmt: skip
        picks = rng.integers(0, items, N_CANDIDATES)
        picks[rng.random(N_CANDIDATES) < 0.02] = items + 11
        feats = rng.normal(size=(N_CANDIDATES, 2)).round(4).tolist()
        rows = [
            {"item_id": int(i), "x2": f[0], "x3": f[1]} for i, f in zip(picks, feats, strict=True)
        ]
        out.append(json.dumps({"context": context, "rows": rows}).encode())
    return out


async def _worker(port: int, bodies: list[bytes], queue: list[int], lat: list[float],
                  fails: list[str]) -> None:  # fmt: skip
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = b"POST /score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    try:
        while queue:
            i = queue.pop()
            body = bodies[i % len(bodies)]
            start = time.perf_counter()
            writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            header = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in header.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            payload = await reader.readexactly(length)
            lat.append(time.perf_counter() - start)
            if not header.startswith(b"HTTP/1.1 200"):
                fails.append(header.split(b"\r\n")[0].decode() + " " + payload[:200].decode())
            elif i % 10 == 0 and len(json.loads(payload)["total"]) != N_CANDIDATES:
                fails.append("wrong number of scores")
    except (OSError, asyncio.IncompleteReadError) as err:
        fails.append(f"connection: {err!r}")
    finally:
        writer.close()


def drive(port: int, bodies: list[bytes], n: int, concurrency: int) -> dict[str, Any]:
    """Send ``n`` requests over ``concurrency`` keep-alive connections; latencies in ms."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    gc.collect()
    gc.freeze()  # the generator's own full collections would show as latency
    queue = list(range(n))[::-1]
    lat: list[float] = []
    fails: list[str] = []

    async def main() -> None:
        await asyncio.gather(*[_worker(port, bodies, queue, lat, fails)
                               for _ in range(concurrency)])  # fmt: skip

    start = time.perf_counter()
    asyncio.run(main())
    seconds = time.perf_counter() - start
    ms = np.array(lat) * 1000
    lost = n - len(lat)
    return {
        "requests": n, "failed": len(fails) + lost, "seconds": seconds, "rps": len(lat) / seconds,
        "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()), "errors": fails[:3],
    }  # fmt: skip


# -- orchestration ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the service did not start in time")


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.read().decode()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return float("nan")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--baseline-requests", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--publish-every", type=float, default=1.0)
    parser.add_argument(
        "--publisher-nice",
        type=int,
        default=10,
        help="CPU priority (nice) of the publishing process (10)",
    )
    parser.add_argument("--entities-10m", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="(default: a temporary folder)")
    parser.add_argument("--role", default="main", help=argparse.SUPPRESS)
    parser.add_argument("--arg", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "publisher":
        store, every = args.arg[0], float(args.arg[1])
        return run_publisher(store, every, args.seed, args.users, args.items, args.publisher_nice)
    if args.role == "baseline":
        return run_baseline(args.arg[0], int(args.arg[1]))
    if args.role == "load":
        return run_load_once(args.arg[0], args.arg[1])

    import gdmix

    work = args.workdir or Path(tempfile.mkdtemp(prefix="gdmix-serve-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    me = [sys.executable, str(Path(__file__).resolve()), "--seed", str(args.seed),
          "--users", str(args.users), "--items", str(args.items)]  # fmt: skip
    try:
        t = time.perf_counter()
        store = work / "store"
        model = build_model(args.users, args.items, args.seed)
        gdmix.ModelStore(store).publish(model.write_into, promote=True)
        print(f"model: {args.users:,} users, {args.items:,} items; version 1 written in "
              f"{time.perf_counter() - t:.1f}s", flush=True)  # fmt: skip
        bodies = make_bodies(5000, args.users, args.items, args.seed)

        # gdmix serve, with a publisher
        port = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "gdmix", "-q", "serve", "--store",
                                   str(store), "--port", str(port), "--poll-interval", "0.2"],
                                  env=env)  # fmt: skip
        try:
            _wait_healthy(port, server)
            drive(port, bodies, 2000, args.concurrency)  # warm-up
            role = ["--publisher-nice", str(args.publisher_nice), "--role", "publisher",
                    "--arg", str(store), "--arg", str(args.publish_every)]  # fmt: skip
            publisher = subprocess.Popen([*me, *role], env=env, stdout=subprocess.PIPE, text=True)
            time.sleep(min(3.0, args.publish_every))
            load_before = os.getloadavg()[0]
            served = drive(port, bodies, args.requests, args.concurrency)
            load_after = os.getloadavg()[0]
            _stop(publisher)
            published = [json.loads(line) for line in publisher.stdout.read().splitlines()
                         if line.startswith("{")]  # fmt: skip
            metrics = _get(port, "/metrics")
        finally:
            _stop(server)
        swaps = int(_metric(metrics, "gdmix_model_swaps_total"))
        load_failures = int(_metric(metrics, "gdmix_model_load_failures_total"))

        # baseline: model.score(pandas.DataFrame) per request
        port = _free_port()
        current = gdmix.ModelStore(store).path("current")
        baseline = subprocess.Popen([*me, "--role", "baseline", "--arg", str(current), "--arg",
                                     str(port)], env=env)  # fmt: skip
        try:
            _wait_healthy(port, baseline)
            drive(port, bodies, 50, args.concurrency)
            base = drive(port, bodies, args.baseline_requests, args.concurrency)
        finally:
            _stop(baseline)

        # a 10M-entity version, loaded in a fresh process
        t = time.perf_counter()
        big = build_model(args.entities_10m, args.items, args.seed + 2)
        big_path = big.save(work / "big")
        del big
        written = time.perf_counter() - t
        out = subprocess.run([*me, "--role", "load", "--arg", str(big_path), "--arg",
                              str(current)], env=env, capture_output=True, text=True,
                             check=True)  # fmt: skip
        loaded = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    rows = [("gdmix serve (hot swaps)", served), ("baseline: model.score(DataFrame)", base)]
    print()
    print(f"{'service':34s} {'requests':>9s} {'failed':>7s} {'rps':>8s} {'p50 ms':>8s} "
          f"{'p90 ms':>8s} {'p99 ms':>8s} {'max ms':>8s}")  # fmt: skip
    for name, r in rows:
        print(f"{name:34s} {r['requests']:9d} {r['failed']:7d} {r['rps']:8.0f} {r['p50_ms']:8.2f} "
              f"{r['p90_ms']:8.2f} {r['p99_ms']:8.2f} {r['max_ms']:8.2f}")  # fmt: skip
    seconds = [p["seconds"] for p in published]
    print(
        f"\nconcurrency {args.concurrency}, {N_CANDIDATES} candidates per request, "
        f"{os.cpu_count()} cores; publisher at nice {args.publisher_nice}; machine load "
        f"average {load_before:.2f} before the gdmix run, {load_after:.2f} after"
    )
    print(
        f"versions published during the run: {len(published)} (median "
        f"{np.median(seconds) if seconds else float('nan'):.2f}s each); swapped in: {swaps}; "
        f"refused: {load_failures}"
    )
    print(f"p99 ratio baseline / gdmix serve: {base['p99_ms'] / served['p99_ms']:.1f}x")
    print(
        f"{args.entities_10m:,}-entity version ({loaded['entities']:,} entities in all): "
        f"written in {written:.1f}s, loaded for serving in {loaded['seconds']:.2f}s "
        f"(+{loaded['rss_mib']:.0f} MiB resident)"
    )
    for err in served["errors"] + base["errors"]:
        print("error:", err)
    print(json.dumps({
        "requests": served["requests"], "failed": served["failed"], "swaps": swaps,
        "rps": round(served["rps"], 1), "p50_ms": round(served["p50_ms"], 3),
        "p99_ms": round(served["p99_ms"], 3), "baseline_p99_ms": round(base["p99_ms"], 3),
        "seconds_load_10m": round(loaded["seconds"], 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
