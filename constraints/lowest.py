"""Print `name==version` for every lower bound (`>=`) in pyproject.toml's requirements and the named extras.

The input of constraints/minimum.txt (see the Makefile's `constraints` target): pyproject.toml stays the one place
where each lower bound is written, and CI installs exactly those versions.
    python constraints/lowest.py webserver postgres k8s mysql emulators
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

LOWER_BOUND = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*[^;]*?>=\s*([^,;\s]+)")


def lowest(pyproject: dict, extras: list[str]) -> list[str]:
    project = pyproject["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    pins: dict[str, str] = {}
    for requirement in requirements:
        match = LOWER_BOUND.match(requirement)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


if __name__ == "__main__":
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    print("\n".join(lowest(pyproject, sys.argv[1:])))
