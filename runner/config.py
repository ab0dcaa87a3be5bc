"""The config files: reading one (a syntax error is one line naming the file)."""

from __future__ import annotations

from pathlib import Path

from .exceptions import RunnerError


def read(path: str | Path) -> dict:
    """One config file's tables, or {} when it is absent or not ours to read; a file that is not
    TOML raises RunnerError naming it and saying where tomllib stopped."""
    import tomllib

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        return {}
    except tomllib.TOMLDecodeError as e:
        raise RunnerError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise RunnerError(f"{path}: not valid TOML: not UTF-8 ({e.reason} at byte {e.start})") from None
