#!/usr/bin/env bash
# Runs every check and test of the workspace: rustfmt, the duplicate-code check of the
# library sources, clippy (warnings are errors), the docs (warnings are errors), every test
# with the Python venv of scripts/setup-python.sh for the live PyTorch interop tests, the core
# library without its default features, a short run of every fuzz target (scripts/fuzz.sh), the
# minimum Rust of every crate, and last the README's main job in a fresh copy. Extra arguments
# go to `cargo test`. Exits with the first failing step's code.
#
# With CI=true the interop tests and the minimum-Rust check must run: a Python or torch that
# cannot be set up, or a missing rustup, fails the run.
#
# The workspace builds crates/ckpt-mpi, which needs an MPI: Open MPI from Debian's packages is
# installed once (as root, with apt-get) when missing; its tests run under `mpirun -np 4`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { echo "==> $*" >&2; }

step "Python environment for the interop tests"
if python="$(scripts/setup-python.sh)"; then
    export CKPT_PYTHON="$python"
elif [[ "${CI:-}" == "true" ]]; then
    echo "test.sh: the Python environment could not be set up, and CI=true requires it" >&2
    exit 1
else
    echo "test.sh: WARNING: no Python environment; the interop tests will be skipped" >&2
    export CKPT_PYTHON=""
fi

step "Open MPI for ckpt-mpi and its multi-process tests"
mpi_packages=(libopenmpi-dev openmpi-bin libclang-dev)
have_mpi() { command -v mpicc >/dev/null 2>&1 && command -v mpirun >/dev/null 2>&1; }
if command -v dpkg >/dev/null 2>&1; then
    mpi_installed() { dpkg -s "${mpi_packages[@]}" >/dev/null 2>&1; }
else
    mpi_installed() { have_mpi; }
fi
if mpi_installed; then
    : # already there
elif [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    install=(apt-get install -y -q --no-install-recommends "${mpi_packages[@]}")
    # The package lists may be missing or stale on a fresh machine: update once if needed.
    "${install[@]}" >/dev/null || { apt-get update -q >/dev/null && "${install[@]}" >/dev/null; }
elif have_mpi; then
    echo "test.sh: using the MPI on the PATH ($(command -v mpicc))" >&2
else
    echo "test.sh: no MPI; install ${mpi_packages[*]} (Debian, Ubuntu) or your system's Open MPI" >&2
    exit 1
fi

if command -v rustup >/dev/null 2>&1; then
    for component in rustfmt clippy; do
        if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
            step "installing the $component component"
            rustup component add "$component"
        fi
    done
fi

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "scripts/check-duplicates.sh (no new repeated code in crates/*/src)"
scripts/check-duplicates.sh

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "RUSTDOCFLAGS=\"-D warnings\" cargo doc --workspace --no-deps"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

step "cargo test --workspace $*"
CI="${CI:-}" cargo test --workspace "$@"

step "cargo test -p ckpt --no-default-features --lib (the core library without downloads)"
cargo build -p ckpt --no-default-features
cargo test -p ckpt --no-default-features --lib

step "scripts/fuzz.sh --seconds 20 (the committed findings, then each fuzz target for 20 s)"
cargo fmt --manifest-path fuzz/Cargo.toml --all -- --check
scripts/fuzz.sh --seconds 20

step "scripts/check-msrv.sh (every crate builds with the minimum Rust it declares)"
scripts/check-msrv.sh

step "the README's main job, in a fresh copy with no target directory"
scripts/check-main-job.sh
