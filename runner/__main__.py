import os
import sys


def _forget_the_callers_folder():
    """`python -m runner` puts the folder it was typed in first on sys.path: a module planted there
    (in /tmp, a shared folder) would be imported by a later import, as whoever runs runner (root's
    daemon included). Keep it only where runner itself comes from (a source checkout)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = None
    sys.path[:] = [p for p in sys.path if not (p in ("", ".", cwd) and os.path.abspath(p or ".") != here)]


_forget_the_callers_folder()

from .cli import main  # noqa: E402

sys.exit(main())
