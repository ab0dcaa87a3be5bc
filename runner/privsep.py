"""Privilege separation: whatever the root daemon does with a user's input runs in a helper that
has dropped to that user, as OpenSSH separates its privileged monitor from the code that parses
what a client sends.

`run_as(who, verb, payload)` starts `python -I -m runner.privsep VERB` as root, which loads the
code the verb needs (the daemon's interpreter and libraries may live where users cannot read
them), then drops to the person's uid, gid and groups for good (no capabilities, no way back,
no_new_privs) before it reads the payload or touches any file. Only then does the verb run: with
her permissions, so a path she cannot read is one the helper cannot read either. Its answer is one
JSON object on stdout, which the daemon treats as her input (bounded, its types checked by the
caller). A verb's error comes back as the same exception class with the same one-line message.

A daemon that is not root runs only its own user's jobs: there is no boundary to cross, and the
verb runs in the daemon's process.

Two modules: runner/privdrop.py is the mechanism (run_as, the helper's slots, the drop, the wire) and
knows no verb; this one is the helper's entry point and its fixed table of verbs, decided here in
code: the helper runs the function this table names for the verb in its argv, and nothing else.
The verbs' own code lives with its callers (writes.submit_here, launchspec.translate_here,
cli.models_cmd.infer_here), which call privdrop.run_as with it as `here`, the function run in the
daemon's process where there is no boundary. This module imports them for its table and none of them
imports it (only the dashboard's inference does, to name its verb through run_as below), so no import
comes back (tests/test_layout.py); tests/test_privsep_verbs.py checks that each caller's `here` is
the function this table runs for the verb it names.
"""

from __future__ import annotations

import sys

from . import privdrop
from .privdrop import (  # noqa: F401  (the mechanism, named here as before: tests and the faces use these names)
    HELPER_MEMORY, HELPERS_PER_USER, MAX_ANSWER, STOPPED_SECONDS, Busy, HelperError, _busy, _busy_lock, _can_regain,
    _communicate, _drop, _preload, _raise, _slot, _stopped)


def _verbs() -> dict:
    """verb -> (modules to load before dropping, function(payload) -> JSON-able answer)."""
    return {
        "submit": (["runner.writes", "runner.resolve", "runner.spec", "runner.registry", "runner.queries",
                    "runner.store", "runner.spool", "runner.sitereg", "runner.envs", "config_translators"], _submit),
        "translate": (["runner.launchspec", "runner.prepare", "runner.atomic", "config_translators", "log_parsers"], _translate),
        "infer": (["base64", "runner.cli.models_cmd", "runner.cli.common", "runner.repos", "runner.repos.infer", "runner.envs",
                   "runner.prepare", "runner.registry", "runner.queries", "runner.store", "runner.home", "config_translators"], _infer),
    }


def _submit(payload: dict):
    """A job posted over HTTP, validated and spooled as its user (runner.writes.submit_here)."""
    from .writes import submit_here

    return submit_here(payload)


def _translate(payload: dict):
    """A job's translation (runner.launchspec.translate_here): reads and converts her dataset, writes into her job folder."""
    from .launchspec import translate_here

    return translate_here(payload)


def _infer(payload: dict):
    """`runner infer` on a user's job or checkpoint, run as its owner (runner.cli.models_cmd.infer_here)."""
    from .cli.models_cmd import infer_here

    return infer_here(payload)


def run_as(who, verb: str, payload: dict, timeout: float = 600.0, env: dict | None = None, wait: bool | None = None):
    """privdrop.run_as of one of this table's verbs, by its name (what the dashboard's inference calls)."""
    return privdrop.run_as(who, verb, payload, timeout, env, wait, here=_verbs()[verb][1])


def main(argv: list[str]) -> int:
    return privdrop.serve(argv, _verbs())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
