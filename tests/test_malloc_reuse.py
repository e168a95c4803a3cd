"""The command line's glibc setting: freed large blocks are reused, not faulted again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gdmix.malloc_reuse import reuse_freed_memory

# Allocate, touch and free a 256 MB array, then count the minor page faults of a second
# one of the same size: without the setting glibc unmaps the first and faults the second
# in page by page; with it the second takes the first one's pages.
_PROBE = """
import json, resource, sys
import numpy as np
core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1.26
core.multiarray._set_madvise_hugepage(False)  # 4 KiB pages: faults are countable
if sys.argv[1] == "1":
    from gdmix.malloc_reuse import reuse_freed_memory
    assert reuse_freed_memory()
n = 32 * 1024 * 1024
a = np.ones(n); del a
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
b = np.ones(n)
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before))
"""


def _second_array_faults(setting: bool) -> int:
    env = {k: v for k, v in os.environ.items() if k != "GDMIX_MALLOC_REUSE"}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, "1" if setting else "0"],
        check=True, capture_output=True, text=True, env=env,
    )  # fmt: skip
    return int(json.loads(out.stdout))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a glibc setting")
def test_freed_blocks_are_reused_without_new_page_faults():
    pages = 32 * 1024 * 1024 * 8 // 4096
    without = _second_array_faults(False)
    if without < pages // 2:
        pytest.skip(f"{without} faults for {pages} pages: the kernel backs arrays with huge pages")
    assert without >= 0.9 * pages
    assert _second_array_faults(True) < 0.05 * pages


def test_opt_out_and_other_systems(monkeypatch):
    monkeypatch.setenv("GDMIX_MALLOC_REUSE", "0")
    assert reuse_freed_memory() is False
    monkeypatch.delenv("GDMIX_MALLOC_REUSE")
    monkeypatch.setattr(sys, "platform", "darwin")
    assert reuse_freed_memory() is False


def test_the_command_sets_it_except_for_serve(monkeypatch):
    import gdmix.cli as cli
    import gdmix.hugepages as hugepages
    import gdmix.malloc_reuse as malloc_reuse

    calls: list[str] = []
    monkeypatch.setattr(malloc_reuse, "reuse_freed_memory", lambda: calls.append("set"))
    monkeypatch.setattr(hugepages, "avoid_compaction_stalls", lambda: False)
    monkeypatch.setattr(cli, "_main", lambda args: 0)
    monkeypatch.setattr(cli.gc, "freeze", lambda: None)  # not this test process's objects
    for argv, expected in ((["gdmix", "inspect", "x"], ["set"]),
                           (["gdmix", "serve", "--model", "x"], [])):  # fmt: skip
        calls.clear()
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as stop:
            cli.entry()
        assert stop.value.code == 0
        assert calls == expected


def test_the_command_moves_the_imports_out_of_the_collectors_reach():
    """``entry`` freezes what the imports made: full collections (and the ones at exit)
    no longer walk it."""
    code = (
        "import atexit, gc, sys\n"
        "sys.argv = ['gdmix', 'inspect', 'no-such-model']\n"
        "import gdmix.cli as cli\n"
        "before = gc.get_freeze_count()\n"
        "atexit.register(lambda: print(before, gc.get_freeze_count()))\n"
        "cli.entry()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr  # the one-line error of a missing model
    before, after = map(int, done.stdout.split())
    assert before == 0
    assert after > 10_000  # numba, pandas, pyarrow, pydantic... objects
