"""The daily schedule, evaluated for given ticks, takes the day that just ended in PIPELINE_TIMEZONE.

The zone and the hour are read from the environment when the code location is imported, as in a deployment,
so each configuration is loaded in a process of its own (with the other variables a code location needs).
"""

from __future__ import annotations

import json
import subprocess
import sys

from dify_pipeline_tests.configuration import LOADABLE_ENVIRONMENT, environment_without_pipeline_variables

EVALUATE_TICKS = """
import json, sys
from datetime import datetime
import dagster as dg
from dify_pipeline.definitions import build_definitions

defs = build_definitions()

schedule = defs.get_schedule_def("daily_enrichment_schedule")
partitions = []
for tick in sys.argv[1:]:
    context = dg.build_schedule_context(scheduled_execution_time=datetime.fromisoformat(tick),
                                        repository_def=defs.get_repository_def())
    partitions.append([request.partition_key for request in schedule.evaluate_tick(context).run_requests])
print(json.dumps({"cron": schedule.cron_schedule, "zone": schedule.execution_timezone, "job": schedule.job_name,
                  "status": schedule.default_status.value, "partitions": partitions}))
"""


def evaluate_schedule(env: dict[str, str], *ticks: str) -> dict:
    """Load the code location with these variables and evaluate the schedule at each tick (ISO, with offset)."""
    environment = {**environment_without_pipeline_variables(), **LOADABLE_ENVIRONMENT, **env}
    completed = subprocess.run([sys.executable, "-c", EVALUATE_TICKS, *ticks], env=environment,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_by_default_the_schedule_runs_at_two_utc_for_yesterday_and_starts_stopped():
    result = evaluate_schedule({}, "2026-03-10T02:00:00+00:00")
    assert result["cron"] == "0 2 * * *" and result["zone"] == "UTC"
    assert result["job"] == "daily_enrichment" and result["status"] == "STOPPED"
    assert result["partitions"] == [["2026-03-09"]]


def test_just_after_local_midnight_in_shanghai_the_tick_takes_the_shanghai_day_that_just_ended():
    # 00:05 in Shanghai on 10 March is 16:05 UTC on 9 March: a UTC calendar would still pick 8 March.
    result = evaluate_schedule({"PIPELINE_TIMEZONE": "Asia/Shanghai", "SCHEDULE_HOUR": "0", "SCHEDULE_MINUTE": "5"},
                               "2026-03-10T00:05:00+08:00", "2026-03-09T16:05:00+00:00")
    assert result["cron"] == "5 0 * * *" and result["zone"] == "Asia/Shanghai"
    assert result["partitions"] == [["2026-03-09"], ["2026-03-09"]]


def test_the_tick_after_a_daylight_saving_change_takes_the_short_day():
    # New York's clocks went forward at 02:00 on 8 March 2026, so that day lasted 23 hours.
    result = evaluate_schedule({"PIPELINE_TIMEZONE": "America/New_York", "SCHEDULE_HOUR": "3"},
                               "2026-03-08T03:00:00-04:00", "2026-03-09T03:00:00-04:00")
    assert result["cron"] == "0 3 * * *" and result["zone"] == "America/New_York"
    assert result["partitions"] == [["2026-03-07"], ["2026-03-08"]]
