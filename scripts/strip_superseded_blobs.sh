#!/usr/bin/env bash
# The maintainers' history rewrite that makes room under the Extensions Index's 100 MiB (weights/README.md).
# Run by hand, never by CI: it rewrites every commit id, so it is announced and force-pushed by a maintainer.
# It works on a fresh clone in a scratch folder and changes nothing here; it prints the clone's size by the
# index's rule (every file of a clone, .git included, in MiB) before and after, and where the rewritten
# repository is. Needs git-filter-repo (pip install git-filter-repo).
#
#   bash scripts/strip_superseded_blobs.sh [MIN_BYTES]    # blobs over MIN_BYTES (default 300000) not in HEAD
set -euo pipefail
min_bytes=${1:-300000}
source_repo=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
size_mib() { find "$1" -type f -printf '%s\n' | awk '{s += $1} END {printf "%.1f", s / 1048576}'; }

git clone --quiet --no-local --single-branch "$source_repo" "$work/repo"
cd "$work/repo"
echo "before: $(size_mib .) MiB"
git ls-tree -r HEAD | awk '{print $3}' | sort -u > "$work/current"
git rev-list --objects --all | cut -d' ' -f1 \
  | git cat-file --batch-check='%(objecttype) %(objectname) %(objectsize)' \
  | awk -v min="$min_bytes" '$1 == "blob" && $3 > min {print $2}' | sort -u > "$work/large"
comm -23 "$work/large" "$work/current" > "$work/superseded"
echo "superseded blobs over $min_bytes bytes: $(wc -l < "$work/superseded")"
git filter-repo --quiet --force --strip-blobs-with-ids "$work/superseded"
git reflog expire --expire=now --all && git gc --quiet --prune=now --aggressive
echo "after: $(size_mib .) MiB (rewritten clone: $work/repo; push it to main only as the announced maintainers' step)"
