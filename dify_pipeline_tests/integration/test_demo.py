"""`make demo`: what it prints is progress and a summary, not Dagster's event log (that stays in the run)."""

from __future__ import annotations

import re
import subprocess
import sys

from dify_pipeline.contract import DEFAULT_CATEGORIES
from dify_pipeline_dev.demo.__main__ import MISSING
from dify_pipeline_tests.integration import services

DAGSTER_EVENT_LINE = re.compile(r" - (DEBUG|INFO) - .* - (STEP_START|STEP_OUTPUT|ASSET_MATERIALIZATION|RUN_START)\b")


def run_demo(output, *arguments: str) -> subprocess.CompletedProcess:
    # A process of its own: the demo sets the variables of its environment, as `make demo` runs it.
    return subprocess.run([sys.executable, "-m", "dify_pipeline_dev.demo", "--output", str(output), *arguments],
                          cwd=services.REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_the_demo_prints_progress_and_its_summary_not_dagster_debug_events(tmp_path):
    demo = run_demo(tmp_path / "demo", "--tickets", "120", "--latency-ms", "2")
    printed = demo.stdout + demo.stderr
    assert demo.returncode == 0, printed[-3000:]
    assert " - DEBUG - " not in printed and not DAGSTER_EVENT_LINE.search(printed), printed[:3000]
    assert "succeeded: partition" in printed  # the summary
    assert re.search(r"^raw_tickets +\d+ rows", printed, re.MULTILINE)
    # Every figure the summary names is in the steps' metadata (a renamed key would print MISSING).
    assert MISSING not in printed, printed[-3000:]
    # The label outputs' counts, e.g. "  category            {'物流问题': 31, ...}".
    category_line = re.search(r"^  category +\{(.*)\}$", printed, re.MULTILINE)
    assert category_line and any(f"'{label}': " in category_line.group(1) for label in DEFAULT_CATEGORIES), printed
    assert re.search(r"^  sentiment +\{'(positive|neutral|negative)': \d+", printed, re.MULTILINE), printed
    assert re.search(r"enriched_tickets.*done", printed)  # progress, step by step
    # The run's own log still holds every event, for `dagster dev` on the demo's folder.
    import dagster as dg
    with dg.DagsterInstance.from_config(str(tmp_path / "demo" / "dagster_home")) as instance:
        [run] = instance.get_runs()
        events = instance.all_logs(run.run_id)
        assert any(e.dagster_event and e.dagster_event.event_type_value == "STEP_START" for e in events)
