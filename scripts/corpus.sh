#!/usr/bin/env bash
# Assembles the default training text, for trying stlm on a machine without
# a corpus of its own: the license texts every Debian system has
# (/usr/share/common-licenses, from base-files; the regular files, in name
# order, symlinked aliases skipped) followed by this project's own
# documentation. Nothing in it is stored in the repository.
# Usage: scripts/corpus.sh OUT.txt
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ $# -ne 1 ]]; then
  echo "usage: scripts/corpus.sh OUT.txt" >&2
  exit 2
fi
out=$1
licenses=/usr/share/common-licenses
files=()
if [[ -d $licenses ]]; then
  while IFS= read -r f; do files+=("$f"); done < <(
    find "$licenses" -maxdepth 1 -type f | LC_ALL=C sort)
fi
files+=("$root/README.md")
while IFS= read -r f; do files+=("$f"); done < <(
  find "$root/docs" -maxdepth 1 -name '*.md' -type f | LC_ALL=C sort)
mkdir -p "$(dirname "$out")"
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cat "${files[@]}" > "$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "corpus: $(wc -c < "$out") bytes from ${#files[@]} files -> $out"
