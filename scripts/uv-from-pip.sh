# uv's index and CA settings from pip's configuration (uv does not read pip's config). Nothing here
# names a path: whatever this machine's pip is told (`pip config list`: its files and PIP_*
# variables), uv is told the same.
#
# Sourced (`. scripts/uv-from-pip.sh`, as the scripts do): exports UV_INDEX_URL,
# UV_EXTRA_INDEX_URL, UV_FIND_LINKS, UV_INDEX_STRATEGY when none of uv's index variables is set,
# and SSL_CERT_FILE (pip's `cert`) when it is unset.
# Run (`bash scripts/uv-from-pip.sh`): prints them as the [envs] table of runner's config, with
# the same as a systemd drop-in in comments, for the daemon (whose unit sees none of this shell's
# variables): `bash scripts/uv-from-pip.sh >> /etc/runner/config.toml`. PY names the Python whose
# pip is asked (default python3).
_cfg="$("${PY:-python3}" -m pip config list 2>/dev/null || true)"
# the first of a key's values: PIP_* variables (listed first, as ':env:.key') win over the files, as in pip
_get() { printf '%s\n' "$_cfg" | sed -n "s/^[^ ]*\.$1='\(.*\)'\$/\1/p" | head -n 1; }
_index="$(_get index-url)"; _extra="$(_get extra-index-url)"; _links="$(_get find-links)"; _cert="$(_get cert)"
_strategy=""
# Local indexes may hold only some versions of a package: let uv pick across all of them.
[ -n "$_extra$_links" ] && _strategy=unsafe-best-match

if (return 0 2>/dev/null); then  # sourced
  if [ -z "${UV_INDEX_URL:-}${UV_EXTRA_INDEX_URL:-}${UV_FIND_LINKS:-}" ]; then
    [ -n "$_index" ] && export UV_INDEX_URL="$_index"
    [ -n "$_extra" ] && export UV_EXTRA_INDEX_URL="$_extra"
    # pip separates find-links with spaces, uv with commas
    [ -n "$_links" ] && export UV_FIND_LINKS="$(printf '%s' "$_links" | tr -s ' \n' ',,' | sed 's/^,//; s/,$//')"
    [ -n "$_strategy" ] && [ -z "${UV_INDEX_STRATEGY:-}" ] && export UV_INDEX_STRATEGY="$_strategy"
  fi
  [ -n "$_cert" ] && [ -z "${SSL_CERT_FILE:-}" ] && export SSL_CERT_FILE="$_cert"
else
  _toml_list() { printf '%s' "$1" | tr -s ' \n' '\n\n' | sed '/^$/d; s/.*/"&"/' | paste -sd, - | sed 's/,/, /g; s/.*/[&]/'; }
  if [ -z "$_index$_extra$_links$_cert" ]; then
    echo "# pip's configuration (${PY:-python3} -m pip config list) names no index, find-links or CA bundle: uv needs nothing from it"
  else
    echo "# uv's settings from pip's configuration (${PY:-python3} -m pip config list), for runner's daemon"
    echo "[envs]"
    [ -n "$_index" ] && echo "index_url = \"$_index\""
    [ -n "$_extra" ] && echo "extra_index_urls = $(_toml_list "$_extra")"
    [ -n "$_links" ] && echo "find_links = $(_toml_list "$_links")"
    [ -n "$_strategy" ] && echo "index_strategy = \"$_strategy\""
    [ -n "$_cert" ] && echo "ca_bundle = \"$_cert\""
    echo "# or the same for the unit instead (systemctl edit runner):"
    echo "# [Service]"
    [ -n "$_index" ] && echo "# Environment=\"UV_INDEX_URL=$_index\""
    [ -n "$_extra" ] && echo "# Environment=\"UV_EXTRA_INDEX_URL=$(printf '%s' "$_extra" | tr -s ' \n' '  ')\""
    [ -n "$_links" ] && echo "# Environment=\"UV_FIND_LINKS=$(printf '%s' "$_links" | tr -s ' \n' ',,' | sed 's/^,//; s/,$//')\""
    [ -n "$_strategy" ] && echo "# Environment=UV_INDEX_STRATEGY=$_strategy"
    [ -n "$_cert" ] && echo "# Environment=\"SSL_CERT_FILE=$_cert\""
  fi
fi
unset _cfg _index _extra _links _cert _strategy
unset -f _get _toml_list 2>/dev/null || true
