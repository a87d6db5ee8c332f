"""dify_pipeline: daily LLM enrichment of business records through a Dify app, as a Dagster code location.

`dify_pipeline.DifyEnrichment` is the Dagster Component of one enrichment (see components.py); it is imported on
first use, so importing a submodule does not import the whole pipeline.
"""

_LAZY = {"DifyEnrichment": "dify_pipeline.components"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dify_pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
