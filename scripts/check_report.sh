#!/usr/bin/env bash
# Render the MovieLens-100K report in headless Chromium and save a screenshot.
# Not part of `make test`. Needs Debian's chromium (apt-get install chromium) and the
# MovieLens files ($GDMIX_DATA_DIR, as for `make demo`).
#   scripts/check_report.sh [OUT_DIR]      (default: ./report-check)
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(realpath -m "${1:-report-check}")"
mkdir -p "$out"
export GDMIX_DATA_DIR="${GDMIX_DATA_DIR:-$(realpath ../shared/data)}"
.venv/bin/python - "$out" <<'PY'
import sys
from pathlib import Path

from gdmix.data.movielens import load_movielens_100k, split_movielens
from gdmix.examples.movielens import run_example
from gdmix.report import write_report

out = Path(sys.argv[1])
train, validation, test = tables = split_movielens(load_movielens_100k(), seed=0)
model = run_example(True, tables=tables).model
model.save(out / "model", overwrite=True)
write_report(model, out / "report.html", test, overwrite=True)
print(f"report: {out / 'report.html'}")
PY
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$(mktemp -d)" --window-size=1200,4000 --hide-scrollbars \
  --screenshot="$out/report.png" "file://$out/report.html"
echo "screenshot: $out/report.png"
