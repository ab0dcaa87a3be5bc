"""What an inline requirement may be: a package specifier, never a path, a file or a pip option.

The rule of an env's `requirements:` (and of its requirements_file's lines, and of a repo table's
requirements), checked by `runner submit` before anything is queued and again where envs are built;
here, apart from the env builder, so that a submit checks it without loading `runner.envs`.
"""

from __future__ import annotations

import re

_REQ_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REQ_VERSION = r"(?:===|==|!=|~=|<=|>=|<|>)\s*[A-Za-z0-9*+!][A-Za-z0-9.*+!_-]*"
_REQ_SPECS = rf"{_REQ_VERSION}(?:\s*,\s*{_REQ_VERSION})*"
_REQUIREMENT = re.compile(
    rf"\s*(?P<name>{_REQ_NAME})\s*(?:\[\s*(?:{_REQ_NAME}(?:\s*,\s*{_REQ_NAME})*)?\s*\])?\s*"
    rf"(?:{_REQ_SPECS}|\(\s*{_REQ_SPECS}\s*\)|@\s*(?P<url>\S+))?\s*(?:;(?P<marker>.*))?")
# A direct reference a site may allow ([envs] allow_requirement_urls): fetched over the network, never a path.
_REQ_URL = re.compile(r"(?:git\+)?https?://[^\s;]+")
_MARKER_TOKEN = re.compile(r"\s*(?:'[\w .*+!,-]*'|\"[\w .*+!,-]*\"|===|==|!=|~=|<=|>=|<|>|\(|\)|(?P<word>[A-Za-z_]+))")
_MARKER_WORDS = {"python_version", "python_full_version", "os_name", "sys_platform", "platform_release", "platform_system",
                 "platform_version", "platform_machine", "platform_python_implementation", "implementation_name",
                 "implementation_version", "extra", "and", "or", "in", "not"}

SPECIFIER_EXPECTED = 'a package specifier such as "numpy>=1.26" (no URLs, paths or pip options)'
"""What an inline requirement must be (the message of a refused one)."""

SPECIFIER_OR_URL_EXPECTED = ('a package specifier such as "numpy>=1.26", or "name @ https://..." where the site allows it '
                             '(no paths or pip options)')
"""The same where the site's [envs] allow_requirement_urls is true."""


def _marker_ok(text: str) -> bool:
    pos = 0
    while text[pos:].strip():
        m = _MARKER_TOKEN.match(text, pos)
        if not m or (m.group("word") and m.group("word") not in _MARKER_WORDS):
            return False
        pos = m.end()
    return True


def requirement_problem(text, allow_urls: bool = False) -> str | None:
    """What an inline requirement should have been, or None when it is a plain package specifier:
    a PEP 508 name with optional extras, version specifiers and an environment marker. URLs
    (`name @ url`) only where the site allows them; never a path, a file, an option (-r, -e, -c,
    --index-url, --find-links, ...) or a second line."""
    expected = SPECIFIER_OR_URL_EXPECTED if allow_urls else SPECIFIER_EXPECTED
    if not isinstance(text, str) or not text.strip() or len(text) > 500:
        return expected
    if re.search(r"[\x00-\x1f\x7f\\]", text) or re.search(r"(?:^|\s)-", text):
        return expected  # a second line, a continuation, an option
    m = _REQUIREMENT.fullmatch(text)
    if not m or (m.group("marker") is not None and not _marker_ok(m.group("marker"))):
        return expected
    if m.group("url") is not None and not (allow_urls and _REQ_URL.fullmatch(m.group("url"))):
        return expected
    if "#" in text and m.group("url") is None:
        return expected
    return None
