# Sourced by the scripts: derive uv's index settings from pip's configuration when uv's own
# UV_* variables are unset (uv does not read pip's config). Nothing here names a path: whatever
# this machine's pip is told, uv is told the same.
if [ -z "${UV_INDEX_URL:-}${UV_EXTRA_INDEX_URL:-}${UV_FIND_LINKS:-}" ]; then
  _cfg="$("${PY:-python3}" -m pip config list 2>/dev/null || true)"
  _get() { printf '%s\n' "$_cfg" | sed -n "s/^[^ ]*\.$1='\(.*\)'\$/\1/p" | head -n 1; }
  _index="$(_get index-url)"; _extra="$(_get extra-index-url)"; _links="$(_get find-links)"
  [ -n "$_index" ] && export UV_INDEX_URL="$_index"
  [ -n "$_extra" ] && export UV_EXTRA_INDEX_URL="$_extra"
  [ -n "$_links" ] && export UV_FIND_LINKS="$_links"
  # Local indexes may hold only some versions of a package: let uv pick across all of them.
  if [ -n "$_extra$_links" ] && [ -z "${UV_INDEX_STRATEGY:-}" ]; then export UV_INDEX_STRATEGY=unsafe-best-match; fi
  unset _cfg _index _extra _links
fi
