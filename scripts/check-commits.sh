#!/usr/bin/env bash
# Checks that commit subjects stay within 72 characters, for the commit that
# added this script and every commit after it (older history is left as it
# is). Run by `make check`; outside a git checkout it does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
max=72
if ! git rev-parse --git-dir >/dev/null 2>&1; then
	echo "check-commits: not a git checkout, skipped"
	exit 0
fi
base="$(git log --diff-filter=A --format=%H -- scripts/check-commits.sh | tail -n1)"
if [ -z "$base" ]; then
	exit 0 # not committed yet: nothing to check
fi
bad=0
while IFS= read -r line; do
	hash="${line%% *}"
	subject="${line#* }"
	if [ "${#subject}" -gt "$max" ]; then
		echo "commit $hash: subject is ${#subject} characters, at most $max: $subject" >&2
		bad=1
	fi
done < <(git log --format='%h %s' "$base^!" ; git log --format='%h %s' "$base..HEAD")
if [ "$bad" -ne 0 ]; then
	echo "check-commits: shorten the subjects above (git commit --amend, or git rebase -i), keep 'area: what changed' and put the why in the body" >&2
	exit 1
fi
