#!/usr/bin/env bash
# Measures sharded checkpoints against torch and safetensors (time and peak memory, one run
# each, after a warm-up that puts the inputs in the page cache), and prints Markdown rows:
#   - a DCP checkpoint of about SIZE MiB written by 4 ranks (gloo, CPU) converted to one torch
#     file: `ckpt convert DIR out.pth` against torch's `dcp_to_torch_save`;
#   - the same weights as Hugging Face sharded safetensors (ckpt convert --max-shard-size)
#     read into memory: ckpt (`read_all` example, eager) against safetensors' `load_file`
#     of every shard.
#
#   scripts/bench-sharded.sh [SIZE_MIB]      # default 1024; files in /tmp/ckpt-bench-sharded
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE="${1:-1024}"
PY="${CKPT_PYTHON:-$HOME/.cache/ckpt/venv/bin/python}"
DIR="${CKPT_BENCH_DIR:-/tmp/ckpt-bench-sharded}"
cargo build --release -q -p ckpt-cli
cargo build --release -q -p ckpt --example read_all
BIN="${CARGO_TARGET_DIR:-target}/release"
rm -rf "$DIR" && mkdir -p "$DIR"
nice -n 19 "$PY" tests/interop/sharded/dcp_write.py "$DIR" 4 "$SIZE" --no-reference >/dev/null
warm() { cat "$@" >/dev/null; }

# Prints "| what | seconds | peak RSS MiB |" for a command, timed by GNU time.
measure() {
    local what="$1"; shift
    /usr/bin/time -f "%e %M" "$@" >/dev/null 2>"$DIR/time.txt"
    read -r secs kib < <(tail -n 1 "$DIR/time.txt")
    printf '| %s | %s s | %d MiB |\n' "$what" "$secs" "$((kib / 1024))"
}

echo "DCP of $(du -sm "$DIR/dcp" | cut -f1) MiB from 4 ranks ($(ls "$DIR/dcp" | wc -l) files) -> one torch file"
echo
echo "| contender | time | peak RSS |"
echo "|---|---|---|"
warm "$DIR"/dcp/*
rm -f "$DIR/ckpt.pth" "$DIR/torch.pth"
measure "ckpt convert DIR out.pth" "$BIN/ckpt" convert "$DIR/dcp" "$DIR/ckpt.pth"
measure "torch dcp_to_torch_save(DIR, out.pth)" "$PY" -c \
    "import sys; from torch.distributed.checkpoint.format_utils import dcp_to_torch_save as f; f(sys.argv[1], sys.argv[2])" \
    "$DIR/dcp" "$DIR/torch.pth"
"$BIN/ckpt" diff "$DIR/ckpt.pth" "$DIR/torch.pth" | tail -n 1

"$BIN/ckpt" convert "$DIR/ckpt.pth" "$DIR/hf" --key model --max-shard-size 200MB
rm -f "$DIR/ckpt.pth" "$DIR/torch.pth"
echo
echo "Hugging Face sharded safetensors of $(du -sm "$DIR/hf" | cut -f1) MiB ($(ls "$DIR"/hf/*.safetensors | wc -l) shards) read into memory"
echo
echo "| contender | time | peak RSS |"
echo "|---|---|---|"
warm "$DIR"/hf/*
measure "ckpt load_with(DIR, mmap: false) (read_all example)" "$BIN/examples/read_all" "$DIR/hf"
measure "safetensors.torch.load_file of every shard" "$PY" -c \
    "import sys, glob; from safetensors.torch import load_file; d = {}; [d.update(load_file(f)) for f in sorted(glob.glob(sys.argv[1] + '/*.safetensors'))]; print(sum(t.nbytes for t in d.values()))" \
    "$DIR/hf"
rm -rf "$DIR"
