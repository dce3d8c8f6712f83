#!/usr/bin/env bash
# Benchmarks ckpt against torch.save/torch.load, safetensors (Python and Rust) and fvcore's
# Checkpointer on the same files, with the machine's own limits (dd to the page cache and to
# tmpfs, memcpy) measured in the same run; with mpirun, the big checkpoint resumed on 4 MPI
# ranks against MPI's own broadcast. Prints a Markdown report.
#
#   scripts/bench.sh            # full workloads (1 GiB, 50,000 tensors, R50-FPN, 100,000 keys)
#   scripts/bench.sh --quick    # small sizes, one repetition: a smoke test
#
# Any other arguments go to `ckpt-bench run` (see `ckpt-bench run --help`), e.g.
# `--reps 7`, `--workloads big,small`, `--results bench/RESULTS.md`, `--dir /some/disk`.
# Python with torch, safetensors and fvcore: $CKPT_PYTHON, else the project venv.
set -euo pipefail
cd "$(dirname "$0")/.."
# The `ckpt` command too: the conversion rows run it.
cargo build --release -q -p ckpt-bench -p ckpt-cli
# The mpi workload (resume on 4 MPI ranks) runs ckpt-mpi's resume_bench under mpirun.
if command -v mpirun >/dev/null 2>&1; then
    cargo build --release -q -p ckpt-mpi --example resume_bench
fi
target_dir="${CARGO_TARGET_DIR:-target}"
exec "$target_dir/release/ckpt-bench" run --command-line "scripts/bench.sh $*" "$@"
