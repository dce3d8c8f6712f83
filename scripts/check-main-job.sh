#!/usr/bin/env bash
# Runs the README's main-job command the way a new user does: in a fresh copy of the
# repository (what `git clone` gives: tracked files, plus files not yet committed that are not
# ignored) with no target directory, its output going to a log file rather than a terminal.
# Fails when the command fails, or when its log holds NUL bytes or absurdly long lines (what a
# progress display or a truncating tee leaves in a log).
#
# Usage: scripts/check-main-job.sh   (scripts/test.sh runs it last)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$PWD"

say() { echo "check-main-job: $*" >&2; }

# The command is the first line of the sh block after "Run the main job" in the README, so the
# check follows the README instead of repeating it.
command="$(awk '/\*\*Run the main job\*\*/ { found = 1 } found && /^```sh/ { getline; print; exit }' README.md)"
if [[ -z "$command" ]]; then
    say "README.md has no sh block after '**Run the main job**'"
    exit 1
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/ckpt-main-job.XXXXXX")"
trap 'rm -rf "$work"' EXIT
kept_log="${TMPDIR:-/tmp}/ckpt-main-job.log"
mkdir "$work/repo"
git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' file; do
        # A tracked file deleted from the work tree is not part of the copy.
        if [[ -e "$file" ]]; then printf '%s\0' "$file"; fi
    done \
    | tar --null -T - -cf - | tar -xf - -C "$work/repo"

log="$work/main-job.log"
say "running '$command' in a fresh copy of the repository, with no target directory"
started=$SECONDS
if ! (cd "$work/repo" && env -u CARGO_TARGET_DIR bash -c "$command") >"$log" 2>&1 </dev/null; then
    say "the main job failed after $((SECONDS - started)) s; the last lines of its log:"
    tail -n 30 "$log" >&2
    cp "$log" "$kept_log" && say "whole log: $kept_log"
    exit 1
fi
if ! tr -d '\000' <"$log" | cmp -s - "$log"; then
    say "the main job's log holds NUL bytes"
    exit 1
fi
longest="$(awk '{ if (length($0) > max) max = length($0) } END { print max + 0 }' "$log")"
if ((longest > 1000)); then
    say "the main job's log has a line of $longest characters"
    exit 1
fi
say "the main job passed in $((SECONDS - started)) s: $(grep -m1 'resumed run ==' "$log" || echo 'ok')"
