#!/usr/bin/env bash
# Runs every check and test of the workspace: rustfmt, the duplicate-code check of the
# library sources, clippy (warnings are errors), the docs (warnings are errors), every test
# with the Python venv of scripts/setup-python.sh for the live PyTorch interop tests, the core
# library without its default features, the minimum Rust of every crate, and last the README's
# main job in a fresh copy. Extra arguments go to `cargo test`. Exits with the first failing
# step's code.
#
# With CI=true the interop tests and the minimum-Rust check must run: a Python or torch that
# cannot be set up, or a missing rustup, fails the run.
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

step "scripts/check-msrv.sh (every crate builds with the minimum Rust it declares)"
scripts/check-msrv.sh

step "the README's main job, in a fresh copy with no target directory"
scripts/check-main-job.sh
