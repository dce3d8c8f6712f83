#!/usr/bin/env bash
# Builds the fuzz targets of fuzz/ (cargo-fuzz, libFuzzer, on the stable toolchain with
# RUSTC_BOOTSTRAP=1 and no sanitizer), replays the committed findings of each target
# (fuzz/regressions/<target>/*) and fuzzes each target for a bounded time, from the corpus in
# fuzz/corpus/<target> (written from the test fixtures and from files ckpt writes when
# missing, grown by every run). cargo-fuzz is installed into ~/.cargo/bin when missing.
#
# Every input runs under a budget that turns an amplification into a crash: the target's own
# allocator aborts when the bytes live at once exceed 4 MiB + 32 bytes per input byte while
# reading (see fuzz/src/budget.rs), libFuzzer stops an input after -timeout seconds and the
# process above -rss_limit_mb. A crash leaves the input in fuzz/artifacts/<target>/; the
# script exits non-zero.
#
# Usage: scripts/fuzz.sh [--seconds N] [--replay-only] [--long] [TARGET...]
#   --seconds N     fuzz each target for N seconds (default 20; scripts/test.sh runs this)
#   --replay-only   only replay the committed findings
#   --long          keep going after a crash (libFuzzer's fork mode), for runs of hours
#   TARGET...       the targets to run (default: all of them)
# Extra libFuzzer flags can be given in FUZZ_FLAGS (e.g. FUZZ_FLAGS="-jobs=2").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "fuzz: $*" >&2; }

seconds=20
replay_only=false
long=false
targets=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --replay-only) replay_only=true; shift ;;
        --long) long=true; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) say "unknown option $1"; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done

# libFuzzer needs unstable compiler flags; the stable toolchain accepts them with this.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz (once; it stays in ~/.cargo/bin)"
    cargo install cargo-fuzz --locked --version '^0.13'
fi

if [[ ${#targets[@]} -eq 0 ]]; then
    mapfile -t targets < <(cargo fuzz list)
    say "building every target"
    cargo fuzz build -s none
else
    for target in "${targets[@]}"; do
        cargo fuzz build -s none "$target"
    done
fi
host="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="fuzz/target/$host/release"

# The budgets of every run (see the header); inputs grow to 64 KiB at most while fuzzing
# (a committed finding is replayed whole).
flags=(-rss_limit_mb=2048 -timeout=10)

status=0
for target in "${targets[@]}"; do
    regressions="fuzz/regressions/$target"
    if compgen -G "$regressions/*" >/dev/null; then
        count="$(find "$regressions" -type f | wc -l)"
        say "$target: replaying $count committed findings"
        if ! "$bin_dir/$target" "${flags[@]}" "$regressions"/* >"/tmp/ckpt-fuzz-replay-$target.log" 2>&1; then
            tail -n 30 "/tmp/ckpt-fuzz-replay-$target.log" >&2
            say "$target: a committed finding fails again (log: /tmp/ckpt-fuzz-replay-$target.log)"
            status=1
        fi
    fi
done
if $replay_only || [[ $status -ne 0 ]]; then
    exit $status
fi

corpus_root=fuzz/corpus
if [[ ! -d "$corpus_root/load_bytes" ]]; then
    say "writing the seed corpus to $corpus_root"
    cargo run -q --manifest-path fuzz/Cargo.toml -p ckpt-fuzz-seeds -- . "$corpus_root"
fi

for target in "${targets[@]}"; do
    corpus="$corpus_root/$target"
    artifacts="fuzz/artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    run=("$bin_dir/$target" "${flags[@]}" -max_len=65536 -max_total_time="$seconds" -print_final_stats=1
        -artifact_prefix="$artifacts/")
    if $long; then
        run+=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
    fi
    # shellcheck disable=SC2086 # FUZZ_FLAGS is a list of flags
    say "$target: fuzzing for ${seconds}s"
    log="/tmp/ckpt-fuzz-$target.log"
    if "${run[@]}" ${FUZZ_FLAGS:-} "$corpus" >"$log" 2>&1; then
        # The final statistics, or in fork mode the last progress line (#N: ...).
        execs="$(sed -n -e 's/^stat::number_of_executed_units: *//p' -e 's/^#\([0-9]*\):.*/\1/p' "$log" | tail -n 1)"
        say "$target: ${execs:-?} executions, no finding"
    else
        tail -n 40 "$log" >&2
        say "$target: FINDING (input in $artifacts/, log: $log)"
        status=1
    fi
    if $long && compgen -G "$artifacts/*" >/dev/null; then
        say "$target: findings in $artifacts/"
        status=1
    fi
done
exit $status
