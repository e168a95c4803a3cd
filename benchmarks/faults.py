"""Fault injection on the save path: does any fault lose a model, leave debris, or end in a
traceback?

Usage::

    python benchmarks/faults.py [--trials 10] [--seed 0]

Two small models A and B are trained once. Each trial starts with A saved at a path and
then saves B there while a fault strikes:

- ``kill-point``: a child process saving B is killed with SIGKILL at a step of the save
  chosen at random (seeded), with the atomic exchange of folders;
- ``kill-point-2renames``: the same where the file system cannot exchange (two renames);
- ``kill-timer``: SIGKILL after a random delay within the save's duration;
- ``rename-fails``: the rename that puts B in place fails (two-rename mode);
- ``disk-full``: writing one of B's files fails with ENOSPC, through ``gdmix train``'s
  command line in a child process (must exit 2 with one line, no traceback);
- ``concurrent``: two processes save A and B to the path at once, the second starting
  after a random delay.

After each fault the path must hold A or B, complete and scoring exactly as saved (else
the trial counts a lost model), and after the next save no hidden leftovers of the path
may remain (else it counts debris). An exception other than gdmix's own one-line errors
counts a traceback. Prints a table; the last line is JSON:
``{"trials": n, "models_lost": 0, "debris_left": 0, "tracebacks": 0}``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd

import gdmix
from gdmix import fsutil, model_dir
from gdmix.errors import GDMixError
from gdmix.model import GDMixModel

POINTS = {
    "kill-point": ["tmp_created", "written", "exchanged", "done"],
    "kill-point-2renames": ["tmp_created", "written", "old_moved", "replaced", "done"],
}

_CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from gdmix import fsutil
    from gdmix.model import GDMixModel
    source, target, point, exchange, hold = sys.argv[1:6]
    if exchange == "0":
        fsutil._renameat2 = None
    def hook(name):
        if name == "tmp_created" and float(hold) > 0:
            print("locked", flush=True)
            time.sleep(float(hold))
        if name == point:
            os.kill(os.getpid(), signal.SIGKILL)
    model = GDMixModel.load(source)
    fsutil.set_fault_hook(hook)
    print("ready", flush=True)
    model.save(target)
    print("saved", flush=True)
    """
)

_DISK_FULL = textwrap.dedent(
    """
    import errno, os, sys
    import pyarrow.parquet as pq
    from gdmix.cli import main
    from gdmix.effects import random_table
    def no_space(table, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    random_table.pq.write_table = no_space
    sys.exit(main(["-q", "train", "--config", sys.argv[1], "--output", sys.argv[2]]))
    """
)


def _frame(seed: int, n: int = 4000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 200, n)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    z = 0.5 * x1 - 0.3 * x2 + rng.normal(0, 1, 200)[user]
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    return pd.DataFrame({"user": user, "x1": x1, "x2": x2, "label": y})


def _config() -> dict:
    return {
        "coordinates": [
            {"name": "g", "type": "fixed", "features": {"numeric": ["x1", "x2"]}},
            {"name": "u", "type": "random", "entity": "user", "l2": 2.0},
        ],
        "training": {"progress": False},
    }


class Bench:
    def __init__(self, root: Path, rng: np.random.Generator) -> None:
        self.root, self.rng = root, rng
        self.frame = _frame(1)
        config = gdmix.GDMixConfig.model_validate(_config())
        self.a = gdmix.fit(config, self.frame.iloc[:2000]).save(root / "A")
        self.b = gdmix.fit(config, self.frame.iloc[2000:]).save(root / "B")
        self.expected = {k: self._scores(p) for k, p in (("A", self.a), ("B", self.b))}
        self.target = root / "target"
        self.frame.iloc[:2000].to_parquet(root / "train.parquet", index=False)
        self.config_path = root / "job.yaml"
        cfg = _config()
        cfg["data"] = {"train": str(root / "train.parquet")}
        self.config_path.write_text(json.dumps(cfg))  # JSON is YAML
        start = time.perf_counter()
        GDMixModel.load(self.a).save(root / "timing")
        self.save_seconds = time.perf_counter() - start

    def _scores(self, path: Path) -> np.ndarray:
        return GDMixModel.load(path).score(self.frame)["total"].to_numpy()

    def reset(self) -> None:
        GDMixModel.load(self.a).save(self.target, overwrite=True)

    def holds_a_model(self) -> bool:
        try:
            got = self._scores(self.target)
        except GDMixError:
            return False
        return any(np.array_equal(got, e) for e in self.expected.values())

    def debris_after_next_save(self) -> int:
        GDMixModel.load(self.b).save(self.target)
        name = self.target.name
        left = [p for p in self.root.iterdir() if p.name.startswith(f".{name}")]
        return len(left)

    def child(self, point: str, exchange: bool, hold: float = 0.0) -> subprocess.Popen:
        args = [str(self.b), str(self.target), point, "1" if exchange else "0", str(hold)]
        return subprocess.Popen([sys.executable, "-c", _CHILD, *args], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip

    # -- the cases ------------------------------------------------------------------------
    def kill_point(self, case: str) -> bool:
        point = str(self.rng.choice(POINTS[case]))
        proc = self.child(point, exchange=case == "kill-point")
        _, err = proc.communicate(timeout=300)
        return "Traceback" in err

    def kill_timer(self) -> bool:
        proc = self.child("never", exchange=True)
        assert proc.stdout is not None
        proc.stdout.readline()  # "ready": the save starts now
        time.sleep(float(self.rng.uniform(0, 1.5 * self.save_seconds)))
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
        return "Traceback" in err

    def rename_fails(self) -> bool:
        real = os.replace
        calls = []

        def flaky(src: str, dst: str) -> None:
            calls.append(dst)
            if len(calls) == 2:
                raise OSError(5, "Input/output error (injected)", str(dst))
            real(src, dst)

        saved = fsutil._renameat2
        fsutil._renameat2 = None
        model_dir.os.replace = flaky  # type: ignore[assignment]
        try:
            GDMixModel.load(self.b).save(self.target)
        except GDMixError:
            return False
        except Exception:
            return True
        finally:
            model_dir.os.replace = real  # type: ignore[assignment]
            fsutil._renameat2 = saved
        return False

    def disk_full(self) -> bool:
        proc = subprocess.run(
            [sys.executable, "-c", _DISK_FULL, str(self.config_path), str(self.target)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        one_line = proc.returncode == 2 and len(lines) == 1 and "No space left" in lines[0]
        return "Traceback" in proc.stderr or not one_line

    def concurrent(self) -> bool:
        first = self.child("never", exchange=True, hold=float(self.rng.uniform(0, 0.5)))
        time.sleep(float(self.rng.uniform(0, 0.3)))
        args = [str(self.a), str(self.target), "never", "1", "0"]
        second = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True,
                                text=True, timeout=300)  # fmt: skip
        _, err = first.communicate(timeout=300)
        ok = first.returncode == 0 and second.returncode == 0
        return "Traceback" in err + second.stderr or not ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10, help="trials per case")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    cases = ["kill-point", "kill-point-2renames", "kill-timer", "rename-fails", "disk-full",
             "concurrent"]  # fmt: skip
    totals = {"trials": 0, "models_lost": 0, "debris_left": 0, "tracebacks": 0}
    with tempfile.TemporaryDirectory(prefix="gdmix-faults-") as tmp:
        bench = Bench(Path(tmp), rng)
        print(f"save of a small model takes {1000 * bench.save_seconds:.0f} ms")
        print(f"{'case':<22}{'trials':>8}{'lost':>8}{'debris':>8}{'tracebacks':>12}{'s':>8}")
        for case in cases:
            row = {"trials": 0, "models_lost": 0, "debris_left": 0, "tracebacks": 0}
            start = time.perf_counter()
            for _ in range(args.trials):
                bench.reset()
                if case.startswith("kill-point"):
                    traceback = bench.kill_point(case)
                elif case == "kill-timer":
                    traceback = bench.kill_timer()
                elif case == "rename-fails":
                    traceback = bench.rename_fails()
                elif case == "disk-full":
                    traceback = bench.disk_full()
                else:
                    traceback = bench.concurrent()
                row["trials"] += 1
                row["tracebacks"] += int(traceback)
                row["models_lost"] += int(not bench.holds_a_model())
                row["debris_left"] += int(bench.debris_after_next_save() > 0)
            for k in totals:
                totals[k] += row[k]
            print(f"{case:<22}{row['trials']:>8}{row['models_lost']:>8}{row['debris_left']:>8}"
                  f"{row['tracebacks']:>12}{time.perf_counter() - start:>8.1f}")  # fmt: skip
    print(json.dumps(totals))


if __name__ == "__main__":
    main()
