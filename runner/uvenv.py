"""uv: its binary, the settings that reach it (the UV_* variables of the site config's [envs] table;
nothing else reaches its index and TLS settings), the arguments of a table's build settings, and
what its errors say, in a line for a job's note or in the lines that matter for a build log."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from .exceptions import EnvBuildError, RunnerError

# [envs] config key -> the variable uv reads. Nothing else reaches uv's index and TLS settings.
_CONFIG_TO_UV = {
    "index_url": "UV_INDEX_URL",
    "extra_index_urls": "UV_EXTRA_INDEX_URL",
    "find_links": "UV_FIND_LINKS",
    "index_strategy": "UV_INDEX_STRATEGY",
    "torch_backend": "UV_TORCH_BACKEND",
    "ca_bundle": "SSL_CERT_FILE",  # a lab's CA bundle (a TLS-inspecting proxy, a private index): the CAs uv trusts
}
_LIST_SEP = {"UV_FIND_LINKS": ","}  # uv splits UV_FIND_LINKS at commas, UV_EXTRA_INDEX_URL at spaces

# What decides where uv finds packages and whether it trusts the answer: recorded by the daemon
# (daemon.json) and shown and tried by `runner doctor`.
_SETTING_VARS = ("SSL_CERT_FILE", "SSL_CERT_DIR", "http_proxy", "https_proxy", "all_proxy", "no_proxy",
                 "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
_NOT_SETTINGS = ("UV_CACHE_DIR", "UV_PYTHON_INSTALL_DIR", "UV_TOOL_DIR", "UV_CONFIG_FILE", "UV_INTERNAL__PARENT_INTERPRETER")


def uv_binary() -> str:
    """The uv binary shipped by the `uv` package (falls back to one on PATH)."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if not found:
            raise RunnerError("uv: not found (pip install uv)")
        return found


def uv_environ(config: dict | None = None) -> dict:
    """The environment for a uv call: ours, plus index and CA settings from the [envs] config table."""
    env = dict(os.environ)
    for key, var in _CONFIG_TO_UV.items():
        value = (config or {}).get(key)
        if value:
            env[var] = _LIST_SEP.get(var, " ").join(value) if isinstance(value, list) else str(value)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def uv_settings(env: dict) -> dict:
    """Of a uv call's environment, what decides where uv finds packages and whether it trusts
    them: its UV_* settings (not its own folders), the CA bundle and the proxies."""
    return {k: v for k, v in sorted(env.items())
            if (k.startswith("UV_") and k not in _NOT_SETTINGS) or k in _SETTING_VARS}


def masked(settings: dict) -> dict:
    """`settings` with the credentials of every URL in them hidden (https://***@host), for files others read."""
    return {k: mask_urls(v) for k, v in settings.items()}


def mask_urls(text: str) -> str:
    """`text` with the credentials of every URL in it hidden (https://***@host)."""
    return re.sub(r"://[^/@\s]+@", "://***@", text)


def build_settings(build, where: str = "build") -> dict:
    """A table's `build`: {constraints: [..], env: {..}, no_isolation: [..]} checked, empty parts dropped."""
    if build is None:
        return {}
    if not isinstance(build, dict):
        raise EnvBuildError(f"{where}: expected a table with constraints, env and no_isolation")
    unknown = set(build) - {"constraints", "env", "no_isolation"}
    if unknown:
        raise EnvBuildError(f"{where}.{sorted(unknown)[0]}: unknown key; expected constraints, env or no_isolation")
    out = {}
    for key in ("constraints", "no_isolation"):
        v = build.get(key) or []
        if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
            raise EnvBuildError(f"{where}.{key}: expected a list of strings")
        if v:
            out[key] = list(v)
    env = build.get("env") or {}
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(x, str) for k, x in env.items()):
        raise EnvBuildError(f"{where}.env: expected a table of strings (NAME = \"value\")")
    if env:
        out["env"] = dict(env)
    return out


def _build_args(build: dict | None, folder: str) -> tuple[list[str], dict]:
    """uv's arguments and environment for a request's build settings (constraints go to a file in `folder`)."""
    build = build or {}
    args = []
    if build.get("constraints"):
        p = Path(folder) / "build-constraints.txt"
        p.write_text("\n".join(build["constraints"]) + "\n")
        args += ["--build-constraints", str(p)]
    for name in build.get("no_isolation", []):
        args += ["--no-build-isolation-package", name]
    return args, dict(build.get("env") or {})


_UV_ERROR = ("error:", "×")  # how uv starts what went wrong,
_UV_CAUSE = ("caused by:", "cause:", "╰─▶")  # and each cause under it (older uv: "Caused by:")


def uv_cause(text: str, limit: int = 300) -> str:
    """What uv says went wrong, in one line for a job's note, which everyone sees: its first error,
    the first and the innermost of its causes ("Failed to fetch: URL: dns error ..."), else its last
    line; URL credentials hidden, at most `limit` characters."""
    from log_parsers.stream import strip_ansi

    lines = [strip_ansi(l).strip() for l in text.splitlines()]
    lines = [l for l in lines if l]
    start = next((i for i, l in enumerate(lines) if l.lower().startswith(_UV_ERROR)), None)
    if start is None:
        said = lines[-1:] or ["no output"]
    else:
        causes = []
        for l in lines[start + 1:]:
            if not l.lower().startswith(_UV_CAUSE):
                break
            causes.append(l)
        said = [lines[start]] + causes[:1] + causes[1:][-1:]
    for prefix in _UV_ERROR + _UV_CAUSE:
        said = [l[len(prefix):].strip() if l.lower().startswith(prefix) else l for l in said]
    one = mask_urls(": ".join(said))
    return one if len(one) <= limit else one[:limit - 3] + "..."


def relevant_lines(text: str, limit: int = 30) -> str:
    """The lines of uv's output that say what went wrong (its causes and warnings too: an
    untrusted certificate or a CA bundle uv could not use is said there), with the fix of a TLS wall."""
    lines = [l for l in text.splitlines() if l.strip()]
    keep = [l for l in lines if re.search(r"(?i)error|no solution|unsatisfiable|conflict|not found|because|hint|×|╰|failed|no space"
                                          r"|cause:|warning:|certificate", l)]
    out = (keep or lines)[-limit:]
    if "SSL_CERT_FILE" in text:
        out.append("uv could not use its CA bundle (SSL_CERT_FILE: [envs] ca_bundle or the daemon's unit): give a PEM file "
                   "that the build user can read, outside /home, /root and /tmp, and restart the daemon")
    elif re.search(r"(?i)invalid peer certificate|certificate verify failed", text):
        out.append("uv does not trust the index's certificate: give uv the CA bundle pip trusts ([envs] ca_bundle, "
                   "or SSL_CERT_FILE in the daemon's unit; `bash scripts/uv-from-pip.sh` prints pip's) and restart the daemon")
    return "\n".join(out)
