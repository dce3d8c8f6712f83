#!/usr/bin/env bash
# Checks that every crate builds (`cargo check --all-targets --locked`) with the minimum Rust
# it declares: the crates that declare the same `rust-version` (their own, or the workspace's
# through `rust-version.workspace = true`) are checked together, with that toolchain, which
# rustup installs (minimal profile) when it is missing.
#
# Without rustup there is no way to get another toolchain: the check is skipped with a message,
# except under CI=true, where that is a failure.
#
# Usage: scripts/check-msrv.sh   (scripts/test.sh runs it)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "check-msrv: $*" >&2; }

if ! command -v rustup >/dev/null 2>&1; then
    if [[ "${CI:-}" == "true" ]]; then
        say "rustup is needed to install the minimum Rust, and CI=true requires this check"
        exit 1
    fi
    say "no rustup to install the minimum Rust with: skipped"
    exit 0
fi

# The value of `key = "..."` in the first lines of a manifest that set it.
manifest_value() { sed -n "s/^$2 = \"\\(.*\\)\"\$/\\1/p" "$1" | head -n 1; }

workspace_version="$(manifest_value Cargo.toml rust-version)"
declare -A packages_of
for manifest in crates/*/Cargo.toml; do
    name="$(manifest_value "$manifest" name)"
    version="$(manifest_value "$manifest" rust-version)"
    if [[ -z "$version" ]] && grep -q '^rust-version.workspace = true' "$manifest"; then
        version="$workspace_version"
    fi
    if [[ -z "$version" ]]; then
        say "$manifest declares no rust-version"
        exit 1
    fi
    packages_of[$version]+=" -p $name"
done

for version in "${!packages_of[@]}"; do
    if ! rustup run "$version" rustc --version >/dev/null 2>&1; then
        say "installing Rust $version"
        rustup toolchain install "$version" --profile minimal >&2
    fi
    say "cargo +$version check --locked --all-targets${packages_of[$version]}"
    # shellcheck disable=SC2086 # one word per -p and package name
    cargo "+$version" check --locked --all-targets ${packages_of[$version]}
done
