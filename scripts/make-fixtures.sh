#!/usr/bin/env bash
# Regenerates every committed fixture that PyTorch, numpy or fvcore produce, with the venv of
# scripts/setup-python.sh. Run it after changing a generator; commit what changes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python="${CKPT_PYTHON:-$(scripts/setup-python.sh)}"
for generator in \
    tests/fixtures/generate.py \
    tests/fixtures/writer/make_reference.py \
    tests/fixtures/detection/make_faster_rcnn_c2.py \
    crates/ckpt-cli/tests/fixtures/make_fixtures.py; do
    echo "==> $generator" >&2
    "$python" "$generator"
done
git status --short -- tests/fixtures crates/ckpt-cli/tests/fixtures
