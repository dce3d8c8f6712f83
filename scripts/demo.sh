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
# Two commands: a target filter (--example) applies to every package of one command, so a
# single `cargo build -p ckpt-candle --example train_mlp -p ckpt-cli` builds no `ckpt` binary.
cargo build --release -q -p ckpt-candle --example train_mlp
cargo build --release -q -p ckpt-cli --bin ckpt
target="${CARGO_TARGET_DIR:-target}"
train="$target/release/examples/train_mlp"
ckpt="$target/release/ckpt"

step "training, preempted after iteration 130"
"$train" "$out/preempted" --stop-at 130
step "running again: resumes from the last checkpoint and finishes"
# A run's output goes to the terminal (stderr) as it comes, and its checksum line is kept.
# (Not `tee /dev/stderr`: when stderr is a file, reopening it truncates it and leaves a run of
# NUL bytes in the log.)
checksum() {
    "$train" "$@" | while IFS= read -r line; do
        echo "$line" >&2
        if [[ "$line" == "weights checksum"* ]]; then echo "$line"; fi
    done
}
resumed="$(checksum "$out/preempted")"
step "an uninterrupted run, for comparison"
straight="$(checksum "$out/straight")"

if [[ -z "$resumed" || "$resumed" != "$straight" ]]; then
    echo "demo: the resumed run differs from the uninterrupted one ($resumed vs $straight)" >&2
    exit 1
fi
echo "resumed run == uninterrupted run ($resumed)"

step "ckpt ls $out/preempted"
"$ckpt" ls "$out/preempted"
step "ckpt inspect $out/preempted/model_final.pth (the file opens in torch.load(weights_only=True))"
"$ckpt" inspect "$out/preempted/model_final.pth"
