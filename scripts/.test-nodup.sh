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
# The object store tests run against a local S3 server (moto, from the same venv) started on
# 127.0.0.1 for the run and stopped at its end; under CI=true they must run too.
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

step "a local S3 server (moto) for the object store tests"
# The server lives for this run only; the trap stops it on any exit. The tests find it through
# the standard AWS variables and create nothing but objects under fresh prefixes of the bucket.
s3_pid=""
stop_s3() { if [[ -n "$s3_pid" ]]; then kill "$s3_pid" 2>/dev/null || true; wait "$s3_pid" 2>/dev/null || true; fi; }
trap stop_s3 EXIT
moto_server="$(dirname "${CKPT_PYTHON:-/nonexistent}")/moto_server"
if [[ -n "$CKPT_PYTHON" && -x "$moto_server" ]]; then
    s3_port="$("$CKPT_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    "$moto_server" -H 127.0.0.1 -p "$s3_port" >"${TMPDIR:-/tmp}/ckpt-moto-$$.log" 2>&1 &
    s3_pid=$!
    export AWS_ENDPOINT_URL="http://127.0.0.1:$s3_port" AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \
        AWS_ACCESS_KEY_ID=ckpt-test AWS_SECRET_ACCESS_KEY=ckpt-test CKPT_TEST_S3_BUCKET=ckpt-test
    # object_store does not create buckets: one PUT, retried while the server starts.
    "$CKPT_PYTHON" - "$AWS_ENDPOINT_URL/$CKPT_TEST_S3_BUCKET" <<'PY' \
        || { echo "test.sh: the local S3 server did not start" >&2; exit 1; }
import sys, time, urllib.request
for attempt in range(100):
    try:
        urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="PUT"), timeout=5)
        break
    except OSError:
        if attempt == 99:
            raise
        time.sleep(0.2)
PY
elif [[ "${CI:-}" == "true" ]]; then
    echo "test.sh: no moto_server in the Python environment, and CI=true requires it" >&2
    exit 1
else
    echo "test.sh: WARNING: no moto_server; the object store tests will be skipped" >&2
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
