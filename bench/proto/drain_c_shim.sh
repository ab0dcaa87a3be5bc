#!/bin/bash
# bench_core.py --only drain with runner's shim replaced by the C prototype c_shim.c (the path a
# trivial job takes; see its header), in a throwaway worktree of HEAD; the rest of runner is HEAD's.
# What a shim that is not Python would give the drain, before anyone writes the whole of one
# (docs/bench/drain.md). Arguments go to bench_core.py. Needs cc, and the checkout set up
# (.venv and the built extensions).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$tmp/tree" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
cc -O2 -Wall -o "$tmp/c_shim" "$root/bench/proto/c_shim.c"
git -C "$root" worktree add -q --detach "$tmp/tree" HEAD
cp "$root"/runner/_*.so "$tmp/tree/runner/"
cp "$root"/log_parsers/_*.so "$tmp/tree/log_parsers/"
ln -s "$root/.venv" "$tmp/tree/.venv"
launcher="$tmp/tree/runner/backends/local_launcher.py"
sed -i "s|\[sys.executable, \"-I\", \"-S\", str(SHIM), \"--serve\"\]|[\"$tmp/c_shim\", \"--serve\"]|" "$launcher"
grep -q "c_shim" "$launcher" || { echo "drain_c_shim.sh: the warm launcher's command was not found in $launcher" >&2; exit 1; }
echo "# the shim: the C prototype bench/proto/c_shim.c (built to $tmp/c_shim)"
cd "$tmp/tree" && .venv/bin/python bench/bench_core.py --only drain "$@"
