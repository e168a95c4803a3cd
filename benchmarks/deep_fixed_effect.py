"""Training throughput of gdmix's deep fixed effect against plain PyTorch loops.

Three loops train the same module (same architecture, same initial weights) on the same
synthetic rows, with the same optimiser (Adam), batch size, learning rate, number of
epochs and loss (``BCEWithLogits(offset + f(x), y, weight)``), in the same process:

- **gdmix**: ``TorchFixedEffect.fit`` without validation data, with the config's speed
  switches (``data_placement``, ``fused_optimizer``, ``precision``, ``compile``; ``auto``
  unless set on the command line). Its first fit (not timed) copies the features to the
  device; the timed fits reuse them, as later coordinate-descent passes do.
- **baseline**: the loop written the usual way, a ``DataLoader`` over a ``TensorDataset``
  of CPU tensors (``shuffle=True``, ``pin_memory`` on CUDA), each batch moved to the
  device. Its per-row collation makes it slow, so it trains on the first
  ``--baseline-rows`` rows (all rows when that is larger); its rate is per row it saw.
- **indexed loop**: a tuned hand-written loop: tensors on the device, one
  ``randperm`` per epoch, batches by indexing.

Each repeat restarts every loop from the same initial weights; timings are best of
``--repeats``, the order alternating. AUCs are on held-out rows of the same synthetic
distribution, after the last repeat. With ``--batch-size`` above ``--lr-reference``
(the batch size the rate 1e-3 is meant for), every loop uses the rate of gdmix's
``lr_scaling: sqrt`` rule, ``1e-3 * sqrt(batch / reference)``.

Usage::

    python benchmarks/deep_fixed_effect.py [--device auto|cpu|cuda] [--arch dlrm,mlp]
        [--rows 200000] [--epochs 2] [--batch-size N] [--repeats 3]
        [--precision auto|fp32|bf16] [--fused auto|on|off] [--compile off|default|...]
        [--placement auto|device|stream]

The rows are synthetic and seeded (CTR-like: 13 numeric columns, 6 categorical columns
of 10 to 100,000 levels), so the script needs no download; ``dlrm`` is the MovieLens
example's DLRM (bottom [64, 16], top [64, 32], 16-d embeddings). Prints a table, then one
JSON line (the last line of output) whose top-level figures are the first ``--arch``'s.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from gdmix.config_deep import DeepFixedEffectConfig
from gdmix.deep.batches import DeepDesign
from gdmix.deep.fixed_torch import TorchFixedEffect
from gdmix.metrics import roc_auc

CARDINALITIES = [10, 100, 1_000, 10_000, 50_000, 100_000]
N_NUMERIC = 13
ARCHITECTURES = {
    "dlrm": {"kind": "dlrm", "bottom": [64, 16], "top": [64, 32], "embedding_dim": 16},
    "mlp": {"kind": "mlp", "hidden": [256, 128], "embedding_dim": 16},
    "wide_deep": {"kind": "wide_deep", "hidden": [256, 128], "embedding_dim": 16},
}
BASE_RATE = 1e-3


def synthetic_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` CTR-like rows: numeric ``(n, 13)``, raw categorical levels ``(n, 6)``
    (Zipf-distributed), 0/1 labels. The label's logit is linear in two numeric columns
    plus one random effect per level of every categorical column."""
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(n, N_NUMERIC)).astype(np.float32)
    logit = 0.3 * numeric[:, 0] - 0.2 * numeric[:, 1]
    levels = np.empty((n, len(CARDINALITIES)), dtype=np.int64)
    for j, card in enumerate(CARDINALITIES):
        codes = np.minimum(rng.zipf(1.3, size=n) - 1, card - 1)
        levels[:, j] = codes
        logit = logit + rng.normal(0.0, 0.5, size=card).astype(np.float32)[codes]
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    return numeric, levels, y


def rate_for(args: argparse.Namespace) -> float:
    """The learning rate of every loop (gdmix's ``sqrt`` rule from ``--lr-reference``)."""
    return BASE_RATE * (args.batch_size / args.lr_reference) ** 0.5


def make_coordinate(arch: str, args: argparse.Namespace) -> TorchFixedEffect:
    """The gdmix coordinate under test."""
    config = DeepFixedEffectConfig(
        name="global",
        features={
            "numeric": [f"n{i}" for i in range(N_NUMERIC)],
            "categorical": [f"c{j}" for j in range(len(CARDINALITIES))],
        },
        architecture=ARCHITECTURES[arch],
        batch_size=args.batch_size,
        max_epochs=args.epochs,
        learning_rate=BASE_RATE,
        lr_scaling="sqrt",
        lr_reference_batch=args.lr_reference,
        device=args.device,
        seed=0,
        precision=args.precision,
        fused_optimizer=args.fused,
        compile=args.compile,
        data_placement=args.placement,
    )
    return TorchFixedEffect(config)


def encoded(
    coord: TorchFixedEffect, numeric: np.ndarray, levels: np.ndarray, sample: int
) -> DeepDesign:
    """Build ``coord``'s encoder from the first ``sample`` rows (as gdmix would from its
    training table: levels seen there get embeddings, others the unknown code 0), then
    encode every row through it, vectorised: one lookup table per categorical column
    holding the code gdmix's encoder gives each level. Equals ``coord.design(frame)`` on
    the full table, without the per-value string conversion that would dominate at 20
    million rows."""
    m = min(sample, len(numeric))
    names = [f"c{j}" for j in range(len(CARDINALITIES))]
    frame = pd.DataFrame(numeric[:m], columns=[f"n{i}" for i in range(N_NUMERIC)])
    frame[names] = levels[:m]
    coord.build(frame)
    every = max(CARDINALITIES)
    all_levels = pd.DataFrame(np.zeros((every, N_NUMERIC)), columns=frame.columns[:N_NUMERIC])
    for j, card in enumerate(CARDINALITIES):
        all_levels[names[j]] = np.arange(every) % card
    lookup = coord.design(all_levels, "levels").tensors["categorical"].numpy()
    assert coord.encoder is not None
    codes = np.empty_like(levels)
    for j, card in enumerate(CARDINALITIES):
        codes[:, j] = lookup[:card, j][levels[:, j]]
    mean = coord.encoder.mean.astype(np.float32)
    std = coord.encoder.std.astype(np.float32)
    tensors = {
        "numeric": torch.from_numpy((numeric - mean) / std),
        "categorical": torch.from_numpy(codes),
    }
    # The shortcut gives gdmix's own encoding (checked on the sample's first rows).
    head = coord.design(frame.iloc[:1000], "sample").tensors
    assert torch.equal(head["categorical"], tensors["categorical"][: len(head["categorical"])])
    torch.testing.assert_close(head["numeric"], tensors["numeric"][: len(head["numeric"])])
    return DeepDesign(tensors, len(numeric))


def dataloader_loop(
    net: torch.nn.Module,
    data: dict[str, torch.Tensor],
    y: torch.Tensor,
    args: argparse.Namespace,
    device: torch.device,
) -> None:
    """The baseline, written the usual way: DataLoader over a TensorDataset."""
    n = len(y)
    ds = TensorDataset(data["numeric"], data["categorical"], y, torch.ones(n), torch.zeros(n))
    cuda = device.type == "cuda"
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, pin_memory=cuda)
    opt = torch.optim.Adam(net.parameters(), lr=rate_for(args))
    net.train()
    for _ in range(args.epochs):
        total = torch.zeros((), device=device)
        for num, cat, yb, wb, ob in loader:
            num, cat = num.to(device, non_blocking=cuda), cat.to(device, non_blocking=cuda)
            yb, wb, ob = (t.to(device, non_blocking=cuda) for t in (yb, wb, ob))
            z = net({"numeric": num, "categorical": cat}) + ob
            loss = F.binary_cross_entropy_with_logits(z, yb, weight=wb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(yb)
        float(total)  # the epoch's loss, as a training loop would log it


def indexed_loop(
    net: torch.nn.Module,
    data: dict[str, torch.Tensor],
    y: torch.Tensor,
    args: argparse.Namespace,
    device: torch.device,
) -> None:
    """A tuned hand-written loop: ``data`` and ``y`` already on ``device``."""
    w, o = torch.ones_like(y), torch.zeros_like(y)
    opt = torch.optim.Adam(net.parameters(), lr=rate_for(args))
    n = len(y)
    net.train()
    for _ in range(args.epochs):
        perm = torch.randperm(n, device=device)
        total = torch.zeros((), device=device)
        for s in range(0, n, args.batch_size):
            idx = perm[s : s + args.batch_size]
            z = net({k: t[idx] for k, t in data.items()}) + o[idx]
            loss = F.binary_cross_entropy_with_logits(z, y[idx], weight=w[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        float(total)


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


def score(net: torch.nn.Module, data: dict[str, torch.Tensor], device: torch.device) -> np.ndarray:
    """Logits of a plain network on CPU tensors, in batches."""
    net.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(data["numeric"]), 65536):
            batch = {k: t[s : s + 65536].to(device) for k, t in data.items()}
            out.append(net(batch).double().cpu())
    net.train()
    return torch.cat(out).numpy()


def bench_arch(
    arch: str, args: argparse.Namespace, rows: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> dict[str, Any]:
    """Train the three loops on one architecture; return its figures."""
    numeric, levels, labels = rows
    n = args.rows
    coord = make_coordinate(arch, args)
    full = encoded(coord, numeric, levels, sample=200_000)
    device = coord.device
    train = DeepDesign({k: t[:n] for k, t in full.tensors.items()}, n)
    test = {k: t[n:] for k, t in full.tensors.items()}
    y_np = labels[:n].astype(np.float64)
    y_test = labels[n:]
    ones, zeros = np.ones(n), np.zeros(n)
    assert coord.network is not None
    initial = coord.get_state()
    reference = copy.deepcopy(coord.network)  # same module, same initial weights
    n_params = sum(p.numel() for p in reference.parameters())
    m = min(n, args.baseline_rows)
    y_t = torch.from_numpy(labels[:n])
    on_device = {k: t.to(device) for k, t in train.tensors.items()}
    y_dev = y_t.to(device)
    nets: dict[str, torch.nn.Module] = {}
    diag: dict[str, Any] = {}

    def run_gdmix() -> None:
        coord.set_state(initial)
        diag.update(coord.fit(train, y_np, ones, zeros, l2=0.0))

    def run_baseline() -> None:
        nets["baseline"] = copy.deepcopy(reference)
        head = {k: t[:m] for k, t in train.tensors.items()}
        dataloader_loop(nets["baseline"], head, y_t[:m], args, device)

    def run_indexed() -> None:
        nets["indexed"] = copy.deepcopy(reference)
        indexed_loop(nets["indexed"], on_device, y_dev, args, device)

    first = timed(run_gdmix, device)  # copies the features to the device; compiles
    loops = [("gdmix", run_gdmix), ("baseline", run_baseline), ("indexed", run_indexed)]
    times: dict[str, list[float]] = {k: [] for k, _ in loops}
    for r in range(max(1, args.repeats)):
        for name, fn in loops if r % 2 == 0 else loops[::-1]:
            times[name].append(timed(fn, device))
    seen = {"gdmix": n, "baseline": m, "indexed": n}
    rate = {k: seen[k] * args.epochs / min(v) for k, v in times.items()}
    auc = {
        "gdmix": roc_auc(y_test, coord.score(DeepDesign(test, len(y_test)))),
        "baseline": roc_auc(y_test, score(nets["baseline"], test, device)),
        "indexed": roc_auc(y_test, score(nets["indexed"], test, device)),
    }
    return {
        "arch": arch,
        "parameters": n_params,
        "examples_per_s": rate["gdmix"],
        "baseline_examples_per_s": rate["baseline"],
        "indexed_examples_per_s": rate["indexed"],
        "auc": auc["gdmix"],
        "baseline_auc": auc["baseline"],
        "indexed_auc": auc["indexed"],
        "baseline_rows": m,
        "seconds": times,
        "first_fit_seconds": first,
        "speedup_vs_baseline": rate["gdmix"] / rate["baseline"],
        "speedup_vs_indexed": rate["gdmix"] / rate["indexed"],
        "data_placement": diag.get("data_placement"),
        "precision": diag.get("precision"),
    }


def main() -> None:
    """Run the benchmark; print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    parser.add_argument("--arch", default="dlrm,mlp", help="comma-separated architectures")
    parser.add_argument("--rows", type=int, default=200_000, help="training rows")
    parser.add_argument("--test-rows", type=int, default=None, help="default rows/10, <= 1M")
    parser.add_argument("--baseline-rows", type=int, default=None, help="DataLoader loop rows")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None, help="512 (cpu), 32768 (cuda)")
    parser.add_argument("--lr-reference", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument("--fused", choices=["auto", "on", "off"], default="auto")
    parser.add_argument(
        "--compile", choices=["off", "default", "reduce-overhead", "max-autotune"], default="off"
    )
    parser.add_argument("--placement", choices=["auto", "device", "stream"], default="auto")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = args.device == "cuda"
    if args.batch_size is None:
        args.batch_size = 32768 if cuda else 512
    if args.baseline_rows is None:
        args.baseline_rows = 1_000_000 if cuda else args.rows
    test_rows = args.test_rows or max(10_000, min(args.rows // 10, 1_000_000))
    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    unknown = sorted(set(archs) - set(ARCHITECTURES))
    if unknown:
        parser.error(f"--arch: unknown {unknown}; choose from {sorted(ARCHITECTURES)}")

    start = time.perf_counter()
    rows = synthetic_rows(args.rows + test_rows, seed=0)
    data_seconds = time.perf_counter() - start
    results = [bench_arch(arch, args, rows) for arch in archs]

    device = torch.device("cuda" if cuda else "cpu")
    name = device_name(device)
    print(f"deep fixed effect, {args.rows:,} rows ({test_rows:,} test), {args.epochs} epochs,")
    print(f"batch {args.batch_size}, Adam at {rate_for(args):.2e}; device {args.device} ({name}),")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; best of")
    print(f"{args.repeats} repeats; synthetic data made in {data_seconds:.1f} s\n")
    row = "{:<10}{:<36}{:>14}{:>9}{:>10}"
    print(row.format("arch", "training loop", "examples/s", "AUC", "vs gdmix"))
    for res in results:
        cells = [
            ("gdmix TorchFixedEffect.fit", res["examples_per_s"], res["auc"]),
            (
                f"DataLoader loop ({res['baseline_rows']:,} rows)",
                res["baseline_examples_per_s"],
                res["baseline_auc"],
            ),
            ("indexed loop (tensors on device)", res["indexed_examples_per_s"], res["indexed_auc"]),
        ]
        for label, rate, auc in cells:
            ratio = f"{res['examples_per_s'] / rate:.2f}x"
            print(row.format(res["arch"], label, f"{rate:,.0f}", f"{auc:.4f}", ratio))
        print(
            f"{'':<10}gdmix: {res['parameters']:,} parameters, data {res['data_placement']}, "
            f"{res['precision']}, first fit {res['first_fit_seconds']:.2f} s"
        )
    top = results[0]
    record = {
        "device": args.device,
        "examples_per_s": top["examples_per_s"],
        "baseline_examples_per_s": top["baseline_examples_per_s"],
        "auc": top["auc"],
        "baseline_auc": top["baseline_auc"],
        "arch": top["arch"],
        "device_name": name,
        "rows": args.rows,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "configs": {res["arch"]: res for res in results},
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
