"""What uv is told by the running daemon (its index, CA bundle and proxies), and whether uv can
resolve a package with exactly that: `runner doctor`'s check of the wall a first env build hits.

The daemon records its settings when it starts (`daemon.json`, credentials hidden; whole in
`uv-settings.json`, 0600): a unit's `Environment=` lines and the config's `[envs]` table reach
the daemon, not the shell doctor runs in, so doctor never reads its own shell's variables when a
daemon runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

PROBE = "packaging"
"""The package doctor resolves: tiny, without dependencies, on every index and mirror (most of what
runner's envs install needs it)."""

PROBE_SECONDS = 60
"""Doctor's limit for the whole resolve (uv's own HTTP timeout is 10 s a request, no retries)."""


def daemon_settings(home, info: dict) -> tuple[dict, str]:
    """(settings, where they come from) of the running daemon (`info`: its daemon.json): whole when
    this user may read uv-settings.json (the daemon's user, root), else as daemon.json shows them.
    Without a running daemon: what one started from this shell would give uv (its environment and
    the config's [envs])."""
    from .envs import uv_environ, uv_settings

    if not info:
        return uv_settings(uv_environ(home.config.get("envs"))), "this shell's and the config's: no daemon runs"
    try:
        whole = json.loads((home.root / "uv-settings.json").read_text())
        if whole.get("pid") == info.get("pid"):
            return whole["uv_settings"], f"the daemon's (pid {info.get('pid')})"
    except (OSError, ValueError, KeyError):
        pass
    if "uv_settings" not in info:
        return {}, f"unknown: the daemon (pid {info.get('pid')}) is older than this runner: restart it"
    return info["uv_settings"], f"the daemon's (pid {info.get('pid')}), credentials hidden"


def resolve(settings: dict, uv: str | None) -> tuple[str, str | None]:
    """(what happened, a problem or None): `uv pip compile` of PROBE with these settings and
    nothing of this shell's, no cache (the index itself must answer). Without uv (a problem said
    apart), nothing is tried."""
    if any("***@" in v for v in settings.values()):
        return "not tried: the daemon's credentials are hidden from you (run doctor as root)", None
    if not uv:
        return "not tried: no uv", None
    cert = settings.get("SSL_CERT_FILE")
    if cert and not os.path.isfile(cert):
        return "not tried", (f"index: SSL_CERT_FILE (the daemon's CA bundle, [envs] ca_bundle) is {cert}, which does not exist: "
                             "give the lab's CA bundle there, or set [envs] ca_bundle in the config, and restart the daemon")
    with tempfile.TemporaryDirectory(prefix="runner-doctor-") as home:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8", "UV_PYTHON_DOWNLOADS": "never",
               **settings, "UV_HTTP_TIMEOUT": "10", "UV_HTTP_RETRIES": "0", "UV_NO_CACHE": "1"}
        argv = [uv, "pip", "compile", "--no-header", "--python-version", f"{sys.version_info[0]}.{sys.version_info[1]}", "-"]
        t0 = time.monotonic()
        try:
            # cwd "/": uv reads a uv.toml or pyproject.toml in its folder and every folder above it
            # (a temporary folder's parent is /tmp, where anyone may plant one: an index of theirs)
            r = subprocess.run(argv, input=PROBE + "\n", capture_output=True, text=True, env=env, cwd="/", timeout=PROBE_SECONDS)
        except subprocess.TimeoutExpired:
            return "no answer", (f"index: uv did not resolve {PROBE} with the daemon's settings within {PROBE_SECONDS} s "
                                 f"({_shown(settings)}): env builds will fail; check [envs] index_url / the proxy")
    took = time.monotonic() - t0
    pinned = next((line.strip() for line in r.stdout.splitlines() if line.strip().startswith(PROBE + "==")), None)
    if r.returncode == 0 and pinned:
        return f"ok: uv resolved {pinned} with them in {took:.1f} s", None
    return "FAILED", (f"index: uv cannot resolve {PROBE} with the daemon's settings ({_shown(settings)}): {_why(r.stderr)}; "
                      "env builds fail the same way: fix [envs] index_url / extra_index_urls / find_links / ca_bundle in "
                      "the config (or the unit's Environment=) and restart the daemon (scripts/uv-from-pip.sh prints pip's)")


def bundle_for_builds(settings: dict, config: dict | None, state: str) -> str | None:
    """A problem when the daemon's CA bundle is one the build user's sandbox cannot use (users'
    requirements are built there, not as root): under a folder the sandbox hides (/home, /root,
    /tmp, the state folder), or unreadable by the build user. None when there is none, or it is fine."""
    from .envjail import HIDDEN, build_person
    from .exceptions import RunnerError
    from .identity import may_access

    cert = settings.get("SSL_CERT_FILE")
    if not cert or not os.path.isfile(cert):
        return None  # none; or missing, which resolve() says
    hidden = next((h for h in (*HIDDEN, state) if os.path.realpath(cert).startswith(h.rstrip("/") + "/")), None)
    if hidden:
        return (f"index: the daemon's CA bundle {cert} lies under {hidden}, which the sandbox of users' env builds does not "
                "show: their builds will not trust the index; put it elsewhere (/etc/ssl/...), set [envs] ca_bundle and restart the daemon")
    try:
        who = build_person(config)
    except RunnerError:
        return None  # no build user: doctor's other lines and the builds say so
    if not may_access(cert, who, "r"):
        return (f"index: the daemon's CA bundle {cert} cannot be read by the build user {who.name}: users' env builds will "
                f"not trust the index (chmod a+r {cert}, and the folders above it a+x)")
    return None


def _shown(settings: dict) -> str:
    """The index and CA settings as one line, credentials hidden (a problem line may be pasted anywhere)."""
    from .envs import masked

    shown = masked({k: v for k, v in settings.items() if k.startswith("UV_") or k == "SSL_CERT_FILE"})
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "none: uv's defaults, https://pypi.org/simple"


def _why(stderr: str) -> str:
    """uv's error line and its last cause, as one line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    error = next((line[len("error:"):].strip() for line in lines if line.startswith("error:")), None)
    causes = [line[len("cause:"):].strip() for line in lines if line.startswith("cause:")]
    if error and causes:
        return f"{error} ({causes[-1]})"
    return error or (lines[-1] if lines else "uv said nothing")
