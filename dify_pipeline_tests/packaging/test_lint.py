"""The code passes the project's own ruff configuration ([tool.ruff] in pyproject.toml), every file of the checkout."""

import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).parents[2]


def test_ruff_finds_nothing():
    found = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                           cwd=CHECKOUT, capture_output=True, text=True)
    assert found.returncode == 0, found.stdout + found.stderr
