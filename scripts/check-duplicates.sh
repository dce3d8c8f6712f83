#!/usr/bin/env bash
# Fails when library code (crates/*/src) repeats itself in a pair of files that
# scripts/duplicates-allowed.txt does not list: the `duplicates` tool lists the pairs of places
# that share six or more lines (the same, or of the same shape), read here over a copy of
# crates/*/src alone, so that tests, examples and scripts do not count.
#
# The tool is a development aid that not every machine has: without it the check says so in
# one line and passes.
#
# Usage: scripts/check-duplicates.sh          (scripts/test.sh runs it)
#        scripts/check-duplicates.sh --list   prints the pairs found, in the allow-list's form
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "check-duplicates: $*" >&2; }
allowed_file="scripts/duplicates-allowed.txt"

if ! command -v duplicates >/dev/null 2>&1; then
    say "the duplicates tool is not installed: skipped"
    exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/ckpt-duplicates.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# The library sources as they are in the work tree (tracked, or new and not ignored).
git ls-files -z --cached --others --exclude-standard -- 'crates/*/src/*' \
    | while IFS= read -r -d '' file; do
        if [[ -e "$file" ]]; then printf '%s\0' "$file"; fi
    done \
    | tar --null -T - -cf - | tar -xf - -C "$work"

report="$(duplicates --repo "$work" --most 200 --seconds 300)"
if grep -q '^incomplete:' <<<"$report"; then
    say "the tool did not read everything:"
    grep '^incomplete:' <<<"$report" >&2
    exit 1
fi
if grep -q '^(+[0-9]* more pairs)' <<<"$report"; then
    say "more than 200 pairs: the check cannot see them all"
    exit 1
fi

# One line per pair of files, `a.rs ~ b.rs` with the two names in order.
found="$(grep -E '^D[0-9]+ ' <<<"$report" \
    | sed -E 's/^D[0-9]+ ([^ ]+):[0-9]+-[0-9]+ ~ ([^ ]+):[0-9]+-[0-9]+.*$/\1 \2/' \
    | while read -r a b; do
        if [[ "$a" > "$b" ]]; then echo "$b ~ $a"; else echo "$a ~ $b"; fi
    done | sort -u)"

if [[ "${1:-}" == "--list" ]]; then
    echo "$found"
    exit 0
fi

allowed="$(grep -v '^#' "$allowed_file" | sed '/^[[:space:]]*$/d' | sort -u)"
new="$(comm -23 <(echo "$found") <(echo "$allowed"))"
if [[ -n "$new" ]]; then
    say "library code repeats itself in pairs of files that $allowed_file does not list:"
    grep -E '^D[0-9]+ ' <<<"$report" | while read -r row; do
        pair="$(sed -E 's/^D[0-9]+ ([^ ]+):[0-9]+-[0-9]+ ~ ([^ ]+):[0-9]+-[0-9]+.*$/\1 \2/' <<<"$row")"
        read -r a b <<<"$pair"
        if [[ "$a" > "$b" ]]; then key="$b ~ $a"; else key="$a ~ $b"; fi
        if grep -qxF "$key" <<<"$new"; then echo "  $row" >&2; fi
    done
    say "factor the shared code out, or (when the likeness is only of shape) add the pair to $allowed_file"
    exit 1
fi
gone="$(comm -13 <(echo "$found") <(echo "$allowed"))"
if [[ -n "$gone" ]]; then
    say "these allowed pairs no longer repeat anything; remove them from $allowed_file:"
    sed 's/^/  /' <<<"$gone" >&2
fi
say "no new pairs ($(grep -c . <<<"$found") known ones)"
