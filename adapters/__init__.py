"""The data plane: adapters that run inside a job's env and import the framework.

Nothing here imports `runner`; the control plane never imports this package. They speak through
files (job.json in, checkpoints and failure.json out) and printed lines.
"""

ADAPTERS = {
    "timm": "adapters.timm_adapter:TimmAdapter",
    "ultralytics": "adapters.ultralytics_adapter:UltralyticsAdapter",
    "transformers": "adapters.transformers_adapter:TransformersAdapter",
}


def load_adapter(framework: str):
    """The adapter class of a framework (imported only now: it imports the framework)."""
    import importlib

    if framework not in ADAPTERS:
        raise ValueError(f"framework {framework!r} has no adapter (known: {', '.join(ADAPTERS)})")
    module, cls = ADAPTERS[framework].split(":")
    return getattr(importlib.import_module(module), cls)
