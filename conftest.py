"""The checkout's own packages (dify_pipeline_dev, dify_pipeline_tests) are not installed: put the checkout on the
path of the tests and of every process they start."""

import os
from pathlib import Path

_CHECKOUT = str(Path(__file__).parent)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_CHECKOUT, os.environ.get("PYTHONPATH")) if p)
