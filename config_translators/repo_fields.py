"""A repo table's {field} tokens and how they are filled, used by config_translators/repo.py (train:)
and config_translators/repo_infer.py (infer:) alike."""

from __future__ import annotations

import re

_FIELD = re.compile(r"\{([a-z_]+)\}")


def _fill(token: str, fields: dict, where: str, hint: str = " (set it in train:, variant:, or the repo's defaults)") -> str:
    def sub(m):
        v = fields.get(m.group(1))
        if v is None:
            raise ValueError(f"{where}: {{{m.group(1)}}} has no value{hint}")
        return str(v)
    return _FIELD.sub(sub, token)
