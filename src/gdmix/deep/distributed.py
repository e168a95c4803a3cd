"""Data-parallel training of deep fixed effects with ``torch.distributed``.

Every process runs the same :func:`gdmix.fit`. Coordinate descent is deterministic, so
the linear fixed effects and the random effects are computed identically on every rank
(replicated); only the deep coordinates' minibatch training is split between the ranks
(``DistributedDataParallel``, see :mod:`gdmix.deep.fixed_torch`). Rank 0 alone writes
the model directory and reports the metrics.

One machine::

    gdmix train --config job.yaml --nproc 4

Several machines, with ``torchrun`` (it sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``)::

    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29500 -m gdmix.deep.distributed --config job.yaml --output DIR

The backend is ``nccl`` when the deep coordinates train on CUDA (rank ``LOCAL_RANK``
uses GPU ``LOCAL_RANK``), ``gloo`` on the CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import gdmix
from gdmix import errors
from gdmix.config import GDMixConfig
from gdmix.errors import ConfigError, GDMixError

__all__ = ["DistributedError", "launch", "main", "state_checksum"]

logger = logging.getLogger("gdmix")

#: Seconds to wait for every process to join the process group.
INIT_TIMEOUT = 120.0
#: Seconds a collective operation may wait for the slowest rank during training. Ranks
#: meet at every deep minibatch; between deep fits they run the replicated coordinates.
COLLECTIVE_TIMEOUT = 1800.0

# Set by launch() for its workers: where rank 0 writes the report, where failing ranks
# write their error.
_RESULT_ENV = "GDMIX_DDP_RESULT"
_ERRORS_ENV = "GDMIX_DDP_ERRORS"


class DistributedError(RuntimeError):
    """A worker process of a data-parallel run failed (not because of bad input)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one-line ConfigError instead of SystemExit
        raise ConfigError(f"gdmix.deep.distributed: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m gdmix.deep.distributed",
        description="One process of a data-parallel gdmix training job (start it with "
        "torchrun, or use 'gdmix train --nproc N' on one machine). Reads RANK, WORLD_SIZE, "
        "LOCAL_RANK, MASTER_ADDR and MASTER_PORT from the environment.",
    )
    parser.add_argument("--config", required=True, type=Path, help="YAML config file")
    parser.add_argument("--output", type=Path, help="model directory (overrides 'output')")
    parser.add_argument("--n-threads", type=int, help="threads for per-entity solves")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--engine", choices=["local"], help="overrides training.engine")
    parser.add_argument("-q", "--quiet", action="store_true", help="log only warnings")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a model folder holding other files"
    )
    parser.add_argument(
        "--trust-custom-code",
        action="store_true",
        help="allow init_model folders to name custom PyTorch modules to import",
    )
    parser.add_argument(
        "--init-timeout", type=float, default=INIT_TIMEOUT, help="seconds to join the group"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=COLLECTIVE_TIMEOUT,
        help="seconds a collective may wait for the slowest rank",
    )
    return parser


# -- configuration --------------------------------------------------------------------


def _prepare(args: argparse.Namespace, world_size: int) -> tuple[GDMixConfig, Path, str]:
    """The job's config with the command-line overrides, its model directory and the
    device type ('cpu' or 'cuda') of its deep coordinates.

    Raises
    ------
    ConfigError
        When the job cannot run data-parallel (see the messages).
    """
    from gdmix.config import load_config, model_output, with_overrides

    if importlib.util.find_spec("torch") is None:
        raise ConfigError("data-parallel training needs PyTorch: pip install 'gdmix[deep]'")
    config = with_overrides(
        load_config(args.config),
        training={
            "n_threads": args.n_threads,
            "engine": args.engine,
            "progress": False if args.no_progress or args.quiet else None,
        },
    )
    output = model_output(config, args.output)
    from gdmix.model_dir import check_model_target

    check_model_target(output, overwrite=args.overwrite)  # before any process starts
    if config.training.engine != "local":
        raise ConfigError(
            "data-parallel training (--nproc, torchrun) runs the 'local' engine; "
            f"'training.engine' is {config.training.engine!r}"
        )
    if args.init_timeout <= 0 or args.timeout <= 0:
        raise ConfigError("--init-timeout and --timeout must be > 0 seconds")
    deep = [c for c in config.coordinates if c.type == "deep" and not c.locked]
    if not deep:
        raise ConfigError(
            "data-parallel training splits the minibatches of 'type: deep' coordinates, and "
            "this config trains none; run without --nproc"
        )
    from gdmix.deep.fixed_torch import _check_config

    for c in deep:
        _check_config(c)  # type: ignore[arg-type]
    devices = {c.name: _device_type(c.device) for c in deep}  # type: ignore[attr-defined]
    if len(set(devices.values())) > 1:
        raise ConfigError(
            f"the deep coordinates must all train on one device type; got {devices} "
            "(set 'device' the same way on each)"
        )
    device = next(iter(devices.values()))
    if device == "cuda":
        import torch

        local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        if local > torch.cuda.device_count():
            raise ConfigError(
                f"{local} processes on this machine but torch finds "
                f"{torch.cuda.device_count()} CUDA device(s); NCCL needs one GPU per process"
            )
    return config, Path(output), device


def _device_type(device: str) -> str:
    """'cpu' or 'cuda' for a ``device`` setting, without creating a CUDA context."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("'device' is 'cuda' but torch finds no CUDA device; use 'auto' or 'cpu'")
    return device


# -- one worker -----------------------------------------------------------------------


def state_checksum(state_dict: dict[str, Any]) -> str:
    """SHA-256 of a state dict: names, dtypes, shapes and bytes of every tensor."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(dtype=_uint8()).numpy().tobytes())
    return digest.hexdigest()


def _uint8() -> Any:
    import torch

    return torch.uint8


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise ConfigError(
            f"${name} is not set: start this module with torchrun (which sets RANK, "
            "WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT), or use "
            "'gdmix train --nproc N' on one machine"
        )
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"${name} must be an integer. Got {value!r} instead") from None


def _train(args: argparse.Namespace) -> dict[str, Any] | None:
    """Join the process group, train, and (rank 0) save; returns rank 0's report."""
    import torch
    from torch import distributed as dist

    from gdmix.deep import fixed_torch
    from gdmix.training import fit, log_callback

    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if rank != 0:
        logger.setLevel(logging.WARNING)
        args.no_progress = True
    config, output, device = _prepare(args, world)
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(
        backend, rank=rank, world_size=world, timeout=timedelta(seconds=args.init_timeout)
    )
    try:
        # Training collectives get their own, longer timeout: between deep fits the
        # ranks run the replicated coordinates and may drift apart by more than the
        # time allowed to join.
        group = dist.new_group(timeout=timedelta(seconds=args.timeout))
        fixed_torch.set_process_group(group)
        logger.info("rank %d of %d (%s): training", rank, world, backend)
        model = fit(
            config,
            callbacks=[log_callback] if rank == 0 else [],
            trust_custom_code=args.trust_custom_code,
        )
        deep = [c for c in model.coordinates if c.kind == "deep" and c.name not in _locked(config)]
        mine = {c.name: state_checksum(c.get_state()["state_dict"]) for c in deep}
        everyone: list[Any] = [None] * world
        dist.all_gather_object(everyone, mine, group=group)
        sums = {name: [theirs[name] for theirs in everyone] for name in mine}
        differ = sorted(name for name, values in sums.items() if len(set(values)) > 1)
        if differ:
            raise DistributedError(
                f"the ranks ended with different weights for {differ}; checksums {sums}"
            )
        if rank != 0:
            return None
        model.metrics["distributed"] = {
            "world_size": world,
            "backend": backend,
            "deep_weights_sha256": sums,
        }
        if config.data.test is not None:
            model.metrics["test"] = model.evaluate(config.data.test, where="test data")
        model.save(output, overwrite=args.overwrite)
        logger.info("model saved to %s", output)
        return {"model": str(output), **model.metrics}
    finally:
        fixed_torch.set_process_group(None)
        dist.destroy_process_group()


def _locked(config: GDMixConfig) -> set[str]:
    return {c.name for c in config.coordinates if c.locked}


def _record_error(err: BaseException) -> None:
    """Write this rank's error where the launcher reads it (when launched by it)."""
    folder = os.environ.get(_ERRORS_ENV)
    if not folder:
        return
    record = {
        "rank": os.environ.get("RANK"),
        "type": type(err).__name__,
        "gdmix": isinstance(err, GDMixError),
        "message": str(err),
        "time": time.time(),
    }
    path = Path(folder) / f"rank{os.environ.get('RANK', 'x')}.json"
    path.write_text(json.dumps(record))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one process of a data-parallel job; returns the exit status (0 ok, 2 bad
    input, 1 other failure). Rank 0 prints the metrics (JSON) and writes the model."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers = [handler]
    logger.propagate = False
    launched = bool(os.environ.get(_ERRORS_ENV))
    try:
        args = _parser().parse_args(argv)
        logger.setLevel(logging.WARNING if args.quiet else logging.INFO)
        report = _train(args)
    except GDMixError as err:
        _record_error(err)
        if not launched:  # the launcher reports it in one line itself
            print(f"gdmix train (rank {os.environ.get('RANK')}): error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        _record_error(err)
        traceback.print_exc()
        return 1
    if report is not None:
        text = json.dumps(report, indent=2, default=str)
        result = os.environ.get(_RESULT_ENV)
        if result:
            Path(result).write_text(text)
        else:
            print(text)
    return 0


# -- the launcher ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(
    config_path: str | os.PathLike[str],
    output: str | os.PathLike[str] | None,
    nproc: int,
    extra_args: Sequence[str] = (),
) -> dict[str, Any]:
    """Train the job of ``config_path`` with ``nproc`` processes on this machine.

    The config is validated here before any process starts. Each process runs
    ``python -m gdmix.deep.distributed`` with ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR`` (127.0.0.1) and ``MASTER_PORT`` (a free port) set; rank 0 writes the
    model directory. When a process fails, the others are stopped at once.

    Parameters
    ----------
    config_path : path
        YAML config of the job.
    output : path, optional
        Model directory (default: the config's ``output``).
    nproc : int
        Number of processes (``>= 1``; on CUDA at most the number of GPUs).
    extra_args : sequence of str
        More worker options: ``--n-threads N``, ``--no-progress``, ``--engine local``,
        ``--quiet``, ``--init-timeout S``, ``--timeout S``.

    Returns
    -------
    dict
        Rank 0's report: ``model`` (the directory) and the model's metrics, with
        ``distributed`` (world size, backend, each rank's checksum of the deep weights).

    Raises
    ------
    GDMixError
        Bad input, found before starting or by a worker (the worker's message).
    DistributedError
        A worker failed for another reason (its traceback is on standard error).
    """
    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1. Got {nproc} instead")
    argv = ["--config", str(Path(config_path).resolve())]
    if output is not None:
        argv += ["--output", str(Path(output).resolve())]
    argv += list(extra_args)
    args = _parser().parse_args(argv)
    config, out, _ = _prepare(args, nproc)
    if args.output is None:
        argv += ["--output", str(out.resolve())]
    env = os.environ.copy()
    # Replicated work shares the cores: split them between the processes.
    threads = max(1, (os.cpu_count() or 1) // nproc)
    if config.training.n_threads is None:
        argv += ["--n-threads", str(threads)]
    env.setdefault("OMP_NUM_THREADS", str(threads))
    src = str(Path(gdmix.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(_free_port()),
        WORLD_SIZE=str(nproc),
        LOCAL_WORLD_SIZE=str(nproc),
    )
    with tempfile.TemporaryDirectory(prefix="gdmix-ddp-") as tmp:
        env[_ERRORS_ENV] = tmp
        result = Path(tmp) / "result.json"
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for rank in range(nproc):
                rank_env = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}
                if rank == 0:
                    rank_env[_RESULT_ENV] = str(result)
                command = [sys.executable, "-m", "gdmix.deep.distributed", *argv]
                procs.append(subprocess.Popen(command, env=rank_env))
            failed = _wait(procs)
        finally:
            _stop(procs)
        if failed is not None:
            raise _failure(Path(tmp), *failed)
        return json.loads(result.read_text())


def _wait(procs: list[subprocess.Popen[bytes]]) -> tuple[int, int] | None:
    """Wait for every process; at the first failure return ``(rank, status)``."""
    while True:
        codes = [p.poll() for p in procs]
        for rank, code in enumerate(codes):
            if code is not None and code != 0:
                return rank, code
        if all(code == 0 for code in codes):
            return None
        time.sleep(0.05)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Terminate the processes still running (then kill those that linger)."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + 10.0
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _failure(folder: Path, rank: int, status: int) -> Exception:
    """The error to raise for a failed run: bad input first, then the earliest error."""
    records = []
    for path in sorted(folder.glob("rank*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    if not records:
        how = f"signal {-status}" if status < 0 else f"exit status {status}"
        return DistributedError(f"rank {rank} failed ({how}) without reporting an error")
    first = min(records, key=lambda r: (not r["gdmix"], r["time"]))
    if first["gdmix"]:
        cls = getattr(errors, first["type"], GDMixError)
        if not (isinstance(cls, type) and issubclass(cls, GDMixError)):
            cls = GDMixError
        return cls(first["message"])
    return DistributedError(
        f"rank {first['rank']} failed: {first['type']}: {first['message']} (its traceback is above)"
    )


if __name__ == "__main__":
    sys.exit(main())
