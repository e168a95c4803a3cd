"""Training throughput of gdmix's deep fixed effect against a hand-written PyTorch loop.

Both train the same module (same architecture, same initial weights) on the same tensors,
with the same optimiser (Adam), batch size, number of epochs and loss
(``BCEWithLogits(offset + f(x), y, weight)``), in the same process, back to back in each
repeat (the order alternates). The overhead is reported best against best and as the
median of the per-repeat ratios (robust to load that drifts on a shared machine). gdmix's
time is the wall time of ``TorchFixedEffect.fit`` without validation data (so no
per-epoch evaluation); it includes its checks, seeding and shuffling. Both keep the
training tensors on the device between runs (gdmix caches its copy).

Usage::

    python benchmarks/deep_fixed_effect.py [--device cpu|cuda|auto] [--arch dlrm]
        [--rows 200000] [--epochs 2] [--batch-size 512] [--repeats 5]

The data is synthetic (CTR-like: 13 numeric columns, 6 categorical columns of 10 to
100,000 levels, a title text column for ``text_cnn``), so the script needs no download.
Prints a table, then one JSON line (the last line of output).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from gdmix.config_deep import DeepFixedEffectConfig
from gdmix.deep.fixed_torch import TorchFixedEffect

CARDINALITIES = [10, 100, 1_000, 10_000, 50_000, 100_000]
ARCHITECTURES = {
    "mlp": {"kind": "mlp", "hidden": [256, 128], "embedding_dim": 16},
    "wide_deep": {"kind": "wide_deep", "hidden": [256, 128], "embedding_dim": 16},
    "text_cnn": {"kind": "text_cnn", "embedding_dim": 64, "filters": 50, "width": 3},
    "dlrm": {"kind": "dlrm", "bottom": [64, 16], "top": [256, 128], "embedding_dim": 16},
}


def synthetic_table(n: int, seed: int) -> pd.DataFrame:
    """CTR-like rows: numeric n0..n12, categorical c0..c5, a text column, a 0/1 label."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, 13)), columns=[f"n{i}" for i in range(13)])
    logit = 0.3 * frame["n0"].to_numpy() - 0.2 * frame["n1"].to_numpy()
    for j, card in enumerate(CARDINALITIES):
        codes = np.minimum(rng.zipf(1.3, size=n) - 1, card - 1)
        frame[f"c{j}"] = codes.astype(np.int64)
        logit += rng.normal(0.0, 0.5, size=card)[codes]
    words = np.array([f"w{i}" for i in range(5_000)])
    picks = rng.integers(0, len(words), size=(n, 4))
    frame["title"] = [" ".join(words[p]) for p in picks]
    frame["label"] = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return frame


def make_coordinate(arch: str, args: argparse.Namespace) -> TorchFixedEffect:
    """The gdmix coordinate under test."""
    config = DeepFixedEffectConfig(
        name="global",
        features={
            "numeric": [f"n{i}" for i in range(13)],
            "categorical": [f"c{j}" for j in range(6)],
        },
        text={"column": "title", "max_length": 8} if arch == "text_cnn" else None,
        architecture=ARCHITECTURES[arch],
        batch_size=args.batch_size,
        max_epochs=args.epochs,
        learning_rate=1e-3,
        device=args.device,
        seed=0,
    )
    return TorchFixedEffect(config)


def plain_loop(
    net: torch.nn.Module,
    data: dict[str, torch.Tensor],
    y: np.ndarray,
    weight: np.ndarray,
    offset: np.ndarray,
    epochs: int,
    batch_size: int,
    device: torch.device,
) -> None:
    """The hand-written reference: the loop anyone would write, nothing else.

    ``data`` is already on ``device`` (gdmix also keeps its copy there between fits).
    """
    yt = torch.tensor(y, dtype=torch.float32, device=device)
    wt = torch.tensor(weight, dtype=torch.float32, device=device)
    ot = torch.tensor(offset, dtype=torch.float32, device=device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    n = len(yt)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(n, device=device)
        total = torch.zeros((), device=device)
        for s in range(0, n, batch_size):
            idx = perm[s : s + batch_size]
            z = net({k: t[idx] for k, t in data.items()}) + ot[idx]
            loss = F.binary_cross_entropy_with_logits(z, yt[idx], weight=wt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        float(total)  # the epoch's loss, as a training loop would log it


def device_name(device: torch.device) -> str:
    """GPU name, or the CPU model from /proc/cpuinfo when readable."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of ``fn()``, synchronising CUDA before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    """Run the benchmark; print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="dlrm")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    frame = synthetic_table(args.rows, seed=0)
    coord = make_coordinate(args.arch, args)
    coord.build(frame)
    device = coord.device
    design = coord.design(frame, "benchmark data", training=True)
    y = frame["label"].to_numpy(np.float64)
    weight, offset = np.ones(len(y)), np.zeros(len(y))
    assert coord.network is not None
    reference = copy.deepcopy(coord.network)  # same module, same initial weights
    n_params = sum(p.numel() for p in reference.parameters())

    def run_gdmix() -> object:
        return coord.fit(design, y, weight, offset, l2=0.0)

    data = {k: t.to(device) for k, t in design.tensors.items()}

    def run_plain() -> None:
        plain_loop(reference, data, y, weight, offset, args.epochs, args.batch_size, device)

    run_gdmix(), run_plain()  # warm-up (allocator, kernels, caches)
    times: dict[str, list[float]] = {"gdmix": [], "plain": []}
    for r in range(max(1, args.repeats)):
        order = [("gdmix", run_gdmix), ("plain", run_plain)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            times[name].append(timed(fn, device))
    examples = args.rows * args.epochs
    best = {k: min(v) for k, v in times.items()}
    rate = {k: examples / v for k, v in best.items()}
    overhead = rate["plain"] / rate["gdmix"] - 1.0
    # Each repeat runs both back to back: the median of the paired ratios is robust to load
    # that drifts during the run (other processes on a shared machine).
    paired = (
        statistics.median(g / p for g, p in zip(times["gdmix"], times["plain"], strict=True)) - 1.0
    )

    name = device_name(device)
    print(f"deep fixed effect '{args.arch}' ({n_params:,} parameters), {args.rows:,} rows,")
    print(f"{args.epochs} epochs, batch {args.batch_size}, Adam; device {device} ({name}),")
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} CPU threads; best of {args.repeats}\n")
    row = "{:<34}{:>12}{:>14}{:>16}"
    print(row.format("training loop", "best s", "median s", "examples/s"))
    labels = {"gdmix": "gdmix TorchFixedEffect.fit", "plain": "hand-written PyTorch loop"}
    for key, label in labels.items():
        med = statistics.median(times[key])
        print(row.format(label, f"{best[key]:.3f}", f"{med:.3f}", f"{rate[key]:,.0f}"))
    print(
        f"\ngdmix overhead: {100 * overhead:+.1f}% best against best, "
        f"{100 * paired:+.1f}% median of paired repeats (goal <= 10%)"
    )
    record = {
        "device": str(device),
        "device_name": name,
        "arch": args.arch,
        "rows": args.rows,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "examples_per_s_gdmix": rate["gdmix"],
        "examples_per_s_plain": rate["plain"],
        "overhead_pct": 100 * overhead,
        "overhead_pct_paired_median": 100 * paired,
        "seconds_gdmix": times["gdmix"],
        "seconds_plain": times["plain"],
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
