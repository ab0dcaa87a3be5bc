"""Pure functions between the planes: a resolved job -> what a framework or repo needs.

Each framework module gives `check_dataset(dataset) -> [problem lines]` (run at submit, so a bad
dataset fails in seconds, not after minutes in the queue) and `translate(job, job_dir) -> dict`
(the adapter's job.json). No torch, no framework imports: the control plane calls them.
"""

import importlib


def for_framework(name: str):
    """The translator module of a framework ('timm', 'ultralytics', 'transformers', 'repo')."""
    return importlib.import_module(f"config_translators.{name}")
