"""The built wheel holds the product: the pipeline's package, and not its emulators, demo, tests or benchmarks."""

import subprocess
import sys
import zipfile
from pathlib import Path

CHECKOUT = Path(__file__).parents[2]


def test_the_wheel_contains_only_the_product(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(tmp_path), str(CHECKOUT)], check=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("dify_pipeline-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"dify_pipeline"}
    assert not [name for name in names if "emulators" in name or "/demo/" in name]
    assert "dify_pipeline/definitions.py" in names and "dify_pipeline/resources/dify/resource.py" in names
