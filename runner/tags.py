"""A job's tags and notes: its owner's words about it, as W&B's tags and notes or MLflow's run tags
and description. Set by `runner tag`, the job page and POST /jobs/ID/tags, all through a spool
request that the daemon applies for the job's owner (or root) alone; seen by whoever sees the job
(like its name), so they are no place for secrets.

A tag is a short word (letters, digits and `_ . : + = -`, starting with a letter or digit): it is
shown as a chip in the runs table and is a filter there and in `runner ls --tag`.
"""

from __future__ import annotations

import re

from .exceptions import SpecError

TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+=-]{0,39}")
MAX_TAGS = 20
MAX_NOTES = 4000
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def tag_problem(tag) -> str | None:
    """Why `tag` is not a tag (None when it is)."""
    if not isinstance(tag, str) or not TAG.fullmatch(tag):
        return (f"tags: given {str(tag)[:50]!r}; expected a word of 1 to 40 letters, digits or _ . : + = - "
                "that starts with a letter or digit")
    return None


def check(add=(), remove=(), notes=None) -> list[str]:
    """Problems with a change of tags and notes, one line each, naming the field."""
    out = []
    for field, tags in (("tags", add), ("remove", remove)):
        if not isinstance(tags, (list, tuple)):
            out.append(f"{field}: expected a list of tags")
            continue
        out += [p.replace("tags:", f"{field}:", 1) for p in map(tag_problem, tags) if p]
    if isinstance(add, (list, tuple)) and len(set(add)) > MAX_TAGS:
        out.append(f"tags: given {len(set(add))}; a job has at most {MAX_TAGS} tags")
    if notes is not None:
        if not isinstance(notes, str):
            out.append("notes: expected text")
        elif len(notes) > MAX_NOTES:
            out.append(f"notes: given {len(notes)} characters; expected at most {MAX_NOTES}")
        elif _CONTROL.search(notes):
            out.append("notes: contains a control character; expected text (line breaks and tabs are fine)")
    return out


def apply(old: list | None, add=(), remove=()) -> list[str]:
    """The job's tags after the change: the old ones less `remove`, then `add` in order, each once."""
    out = [t for t in (old or []) if t not in set(remove)]
    for t in add:
        if t not in out:
            out.append(t)
    if len(out) > MAX_TAGS:
        raise SpecError([f"tags: this would give the job {len(out)} tags; a job has at most {MAX_TAGS} (remove some)"])
    return out


def split(text: str) -> list[str]:
    """Tags as a person types them in one box: separated by commas or spaces."""
    return [t for t in re.split(r"[,\s]+", text or "") if t]
