"""A configuration mistake stops the code location when it loads: the CLI run the README shows fails with the
variable's name and problem, and nothing was exported, paid for or written (the Dify emulator's own counters)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dify_pipeline_tests.integration.pipeline import DAY

MISTAKES = [
    # A relative output ran green and wrote under the working directory, after paying Dify for the day.
    ("OUTPUT_PARQUET_URL", "out/parquet",
     "OUTPUT_PARQUET_URL='out/parquet': not an absolute path (nor s3://bucket/prefix or file:///absolute/folder); "
     "e.g. OUTPUT_PARQUET_URL=s3://analytics/dify/tickets_enriched"),
    # Read while the modules are imported (the partitions), not only when the definitions are built.
    ("PIPELINE_TIMEZONE", "Mars/Base",
     "PIPELINE_TIMEZONE='Mars/Base': not a time zone of the IANA database (Area/City, or UTC); "
     "e.g. PIPELINE_TIMEZONE=Asia/Shanghai"),
    ("DIFY_MAX_CONCURRENCY", "abc", "DIFY_MAX_CONCURRENCY='abc': not a whole number; e.g. DIFY_MAX_CONCURRENCY=16"),
]


@pytest.mark.parametrize("name, value, message", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_a_wrong_setting_fails_the_cli_run_before_anything_is_exported_or_paid(
    name, value, message, pipeline_env, source_tickets, dify_emulator, tmp_path
):
    workdir, home = tmp_path / "workdir", tmp_path / "dagster_home"
    workdir.mkdir()
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, **pipeline_env, "DAGSTER_HOME": str(home), name: value}
    cli = subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "dify_pipeline.definitions",
         "--select", "*", "--partition", DAY],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
    )
    assert cli.returncode != 0
    assert message in cli.stderr
    assert dify_emulator.stats()["paid_runs"] == 0 and not dify_emulator.requests()
    assert not list(workdir.iterdir())  # nothing landed in the working directory
    assert not (home / "storage").exists()  # no run was even started


def test_a_driverless_mysql_url_is_refused_without_showing_its_password(pipeline_env, tmp_path):
    env = {**os.environ, **pipeline_env, "DAGSTER_HOME": str(tmp_path),
           "SOURCE_DATABASE_URL": "mysql://etl:pw-Kq81zz@db.internal/support"}
    validate = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "dify_pipeline.definitions"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    output = validate.stdout + validate.stderr
    assert validate.returncode != 0
    assert "SOURCE_DATABASE_URL='mysql://etl:***@db.internal/support': name the driver: mysql+pymysql://" in output
    assert "pw-Kq81zz" not in output
