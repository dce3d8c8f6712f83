#!/usr/bin/env bash
# The main job: train a small candle MLP with AdamW under ckpt's PeriodicCheckpointer, stop it
# part way (a simulated preemption), resume it, and check that it ends with the same weights as
# a run that was never interrupted; then list the checkpoint directory with `ckpt ls`.
#
# Usage: scripts/demo.sh [OUTPUT_DIR]   (default: a fresh temporary directory)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out="${1:-$(mktemp -d "${TMPDIR:-/tmp}/ckpt-demo.XXXXXX")}"
rm -rf "$out/preempted" "$out/straight"
mkdir -p "$out"

step() { echo "==> $*" >&2; }

step "building (release)"
cargo build --release -q -p ckpt-candle --example train_mlp -p ckpt-cli
train=target/release/examples/train_mlp
ckpt=target/release/ckpt

step "training, preempted after iteration 130"
"$train" "$out/preempted" --stop-at 130
step "running again: resumes from the last checkpoint and finishes"
resumed="$("$train" "$out/preempted" | tee /dev/stderr | grep '^weights checksum')"
step "an uninterrupted run, for comparison"
straight="$("$train" "$out/straight" | tee /dev/stderr | grep '^weights checksum')"

if [[ "$resumed" != "$straight" ]]; then
    echo "demo: the resumed run differs from the uninterrupted one ($resumed vs $straight)" >&2
    exit 1
fi
echo "resumed run == uninterrupted run ($resumed)"

step "ckpt ls $out/preempted"
"$ckpt" ls "$out/preempted"
step "ckpt inspect $out/preempted/model_final.pth (the file opens in torch.load(weights_only=True))"
"$ckpt" inspect "$out/preempted/model_final.pth"
