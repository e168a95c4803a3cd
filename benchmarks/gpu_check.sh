#!/usr/bin/env bash
# The deep fixed effect's GPU checks (issue 15), as one prepared script of about 8 minutes.
#
# Two steps:
#
# 1. Here, on a machine with pip and the MovieLens data (from the repository root):
#
#        bash benchmarks/gpu_check.sh prepare
#
#    copies the MovieLens-100K files and downloads the wheels the GPU image lacks
#    (pydantic and its dependencies) into .gpu_carry/ (ignored by git).
#
# 2. On the GPU machine, with .gpu_carry carried along (the device tool's run with
#    carry [".gpu_carry"] and a timeout of 600 s):
#
#        bash benchmarks/gpu_check.sh
#
#    Everything it prints also goes to $OUT (or ./gpu_check_out): env.txt, pytest.txt,
#    deep_fixed_effect.txt (20M rows, dlrm and mlp), variants.txt (precision, placement)
#    and movielens_deep.txt (the deep AUCs on CUDA against the CPU ones, and at batches
#    1024 and 8192). The time limits of its steps add up to under 600 s.
#
# The project is not pip-installed there: `pip install -c constraints.txt -e ".[dev,deep]"`
# would pull the CPU torch pinned in constraints.txt (and the machine has no registry).
# The script uses the python3 whose torch sees CUDA, with src/ on PYTHONPATH and the
# carried wheels in /tmp/site; it stops with a message when no such torch is found.
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu_carry
PYDANTIC_WHEELS="pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
    typing-extensions==4.16.0"

if [[ "${1:-}" == "prepare" ]]; then
    grep -qx "/$CARRY/" .git/info/exclude 2>/dev/null || echo "/$CARRY/" >> .git/info/exclude
    mkdir -p "$CARRY/data" "$CARRY/whl"
    data="${GDMIX_DATA_DIR:-../shared/data}"
    cp -r "$data/ml-100k" "$CARRY/data/" || { echo "no MovieLens data under $data"; exit 2; }
    # shellcheck disable=SC2086
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$CARRY/whl" $PYDANTIC_WHEELS || exit 2
    du -sh "$CARRY"
    exit 0
fi

OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src" GDMIX_DATA_DIR="$PWD/$CARRY/data"
export NUMBA_CACHE_DIR=/tmp/numba_cache

PY=""
for candidate in python3 /opt/torch/.venv/bin/python3 python; do
    if "$candidate" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
        2>/dev/null; then
        PY="$candidate"
        break
    fi
done
if [[ -z "$PY" ]]; then
    echo "gpu_check: no python with a CUDA-enabled torch found; the GPU figures stay open" \
        | tee "$OUT/env.txt"
    exit 3
fi

if ! "$PY" -c "import pydantic" 2>/dev/null; then
    if compgen -G "$CARRY/whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site "$CARRY"/whl/*.whl || exit 4
        export PYTHONPATH="/tmp/site:$PYTHONPATH"
    else
        echo "gpu_check: pydantic is missing and $CARRY/whl holds no wheels: run 'prepare'"
        exit 4
    fi
fi

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$PY" -c "import torch, pydantic, numpy, pandas, numba, gdmix
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'bf16',
      torch.cuda.is_bf16_supported(), 'pydantic', pydantic.__version__,
      'numpy', numpy.__version__, 'pandas', pandas.__version__, 'numba', numba.__version__)"
    nproc
} 2>&1 | tee "$OUT/env.txt"

start=$SECONDS
step() {  # step NAME TIMEOUT COMMAND...: run, tee to $OUT/NAME.txt, report time
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s)"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
    echo "== $name: exit ${PIPESTATUS[0]}, $((SECONDS - start)) s since start"
}

# 1. The deep tests on the GPU (about 1 minute): the CUDA paths of the feed, fused Adam,
#    bf16 autocast, device-side permutations.
GDMIX_TEST_DEVICE=cuda step pytest 90 "$PY" -m pytest -q -x -p no:cacheprovider \
    tests/test_deep_training_feed.py

# 2. The issue's figures: 20M rows, DLRM (MovieLens sizes) and MLP, gdmix against the
#    DataLoader loop and the indexed loop (about 3 minutes).
step deep_fixed_effect 230 "$PY" benchmarks/deep_fixed_effect.py --rows 20000000 \
    --device cuda --arch dlrm,mlp --repeats 1 --baseline-rows 500000

# 3. Which switches help (4M rows, DLRM, about 1.5 minutes): precision and data
#    placement. The JSON lines say which to make the 'auto' defaults.
: > "$OUT/variants.txt"
for flags in "--precision fp32" "--precision bf16" "--placement stream"; do
    # shellcheck disable=SC2086
    step variant 45 "$PY" benchmarks/deep_fixed_effect.py --rows 4000000 --device cuda \
        --arch dlrm --repeats 1 --baseline-rows 100000 $flags
    { echo "## $flags"; tail -n 1 "$OUT/variant.txt"; } >> "$OUT/variants.txt"
done
rm -f "$OUT/variant.txt"

# 4. MovieLens deep on CUDA (about 2 minutes; the deep rows of benchmarks/movielens.py
#    --deep, without its CPU-only linear part): the example's deep AUCs against the CPU figures (within 0.002) and the DLRM at
#    batches 1024 and 8192 under the sqrt rule (the CPU figures: docs/deep.md).
step movielens_deep 140 "$PY" - <<'PYEOF'
import json
import time

from gdmix import fit
from gdmix.data.movielens import load_movielens_100k, split_movielens
from gdmix.examples.movielens import EXAMPLE_STAGES, deep_example_config

# CPU figures of the example (docs/deep.md), test AUC after FE, +per-user, +per-movie.
CPU = {"text_cnn": [0.7110, 0.7720, 0.7815], "dlrm": [0.7835, 0.7840, 0.7867]}
train, validation, test = split_movielens(load_movielens_100k(), seed=0)
out = {}
for kind, update in [
    ("text_cnn", {}),
    ("dlrm", {}),
    ("dlrm", {"batch_size": 1024, "lr_scaling": "sqrt", "lr_reference_batch": 128,
              "max_epochs": 200, "patience": 5}),
    ("dlrm", {"batch_size": 8192, "lr_scaling": "sqrt", "lr_reference_batch": 128,
              "max_epochs": 200, "patience": 5}),
]:
    config = deep_example_config(kind, device="cuda")
    if update:
        fe = config.coordinates[0].model_copy(update=update)
        config = config.model_copy(update={"coordinates": [fe, *config.coordinates[1:]]})
    start = time.perf_counter()
    metrics = fit(config, train, validation).evaluate(test)
    seconds = time.perf_counter() - start
    auc = [metrics[f"auc_after@{stage}"] for stage, _ in EXAMPLE_STAGES]
    name = kind + (f"_batch{update['batch_size']}" if update else "")
    diff = max(abs(a - b) for a, b in zip(auc, CPU[kind]))
    out[name] = {"auc": auc, "max_diff_vs_cpu": diff, "seconds": seconds}
    print(name, [round(a, 4) for a in auc], f"max diff vs CPU {diff:.4f}", f"{seconds:.1f} s",
          flush=True)
print(json.dumps(out))
PYEOF

echo "gpu_check done in $((SECONDS - start)) s; outputs in $OUT"
