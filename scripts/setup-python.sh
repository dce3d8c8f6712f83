#!/usr/bin/env bash
# Makes the Python environment the interop tests use: a venv with torch, numpy, safetensors,
# fvcore, transformers and huggingface_hub (sharded checkpoints), and the local S3 server (moto)
# and client (boto3) of the object store tests, cached outside the repository at
# ${CKPT_CACHE:-$HOME/.cache/ckpt}/venv.
#
# Idempotent: a stamp file records what was installed, so a second run only checks the venv.
# A broken venv is recreated. Progress goes to stderr; the one line on stdout is the venv's
# python, so scripts can do `CKPT_PYTHON=$(scripts/setup-python.sh)`.
set -euo pipefail

REQUIREMENTS=(torch==2.15.0 numpy safetensors fvcore transformers huggingface_hub 'moto[server]' boto3)
CACHE="${CKPT_CACHE:-$HOME/.cache/ckpt}"
VENV="$CACHE/venv"
PY="$VENV/bin/python"
STAMP="$VENV/.ckpt-requirements"
LOG="$CACHE/pip.log"

say() { echo "setup-python: $*" >&2; }

base_python() {
    local candidate
    for candidate in "${CKPT_BASE_PYTHON:-}" python3.11 python3; do
        if [[ -n "$candidate" ]] && command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    say "no python3 (>= 3.9) found on PATH"
    return 1
}

# What the stamp must say: the requirements and the interpreter they were installed for.
wanted_stamp() {
    echo "${REQUIREMENTS[*]}"
    "$PY" -c 'import sys; print(sys.version.split()[0])'
}

venv_works() {
    [[ -x "$PY" ]] && "$PY" -c 'import sys' >/dev/null 2>&1
}

packages_work() {
    "$PY" -c 'import torch, numpy, safetensors, fvcore, transformers, huggingface_hub, moto.server, boto3' >/dev/null 2>&1
}

create_venv() {
    local base
    base="$(base_python)"
    say "creating $VENV with $base"
    rm -rf "$VENV"
    mkdir -p "$CACHE"
    if ! "$base" -m venv "$VENV" >&2; then
        # Debian's own python3 keeps venv in a separate package.
        if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
            say "python3 -m venv failed; installing python3-venv"
            rm -rf "$VENV"
            apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
            "$base" -m venv "$VENV" >&2
        else
            say "python3 -m venv failed (install python3-venv)"
            return 1
        fi
    fi
}

install_requirements() {
    say "installing ${REQUIREMENTS[*]} (pip log: $LOG; torch takes a few minutes the first time)"
    # pip's own wheel cache (~/.cache/pip) makes a reinstall fast.
    if ! "$PY" -m pip install --progress-bar off "${REQUIREMENTS[@]}" >"$LOG" 2>&1; then
        say "pip install failed; last lines of $LOG:"
        tail -n 20 "$LOG" >&2
        return 1
    fi
}

if venv_works && [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$(wanted_stamp)" ]] && packages_work; then
    say "venv ready at $VENV"
    echo "$PY"
    exit 0
fi

if ! venv_works; then
    create_venv
fi
if ! install_requirements; then
    say "retrying in a fresh venv"
    create_venv
    install_requirements
fi
if ! packages_work; then
    say "torch, numpy, safetensors, fvcore, transformers, huggingface_hub, moto or boto3 still cannot be imported from $PY"
    exit 1
fi
wanted_stamp >"$STAMP"
say "venv ready at $VENV ($("$PY" -c 'import torch; print("torch", torch.__version__)'))"
echo "$PY"
