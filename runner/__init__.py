"""runner: the control plane of a job runner for shared GPU servers.

Nothing in this package imports torch or the data plane (`adapters`); a test enforces it.
"""

__version__ = "0.1.0"
