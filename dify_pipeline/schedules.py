"""The nightly run: the job over the whole flow, and its schedule for the day that just ended."""

from __future__ import annotations

import dagster as dg

from dify_pipeline.checks import FRESHNESS_CHECK_KEYS
from dify_pipeline.environment import read_environment

# The day's assets and their checks; not the freshness checks, which judge the deployment now, not one day, and
# run from their sensor (checks.build_freshness_checks).
daily_enrichment_job = dg.define_asset_job(
    "daily_enrichment", selection=dg.AssetSelection.groups("tickets") - dg.AssetSelection.checks(*FRESHNESS_CHECK_KEYS))

# At SCHEDULE_HOUR:SCHEDULE_MINUTE in the partitions' zone (PIPELINE_TIMEZONE), for the last complete day there.
# Stopped until turned on in the UI, so a deploy never spends money by surprise.
_environment = read_environment(require=False)
daily_schedule = dg.build_schedule_from_partitioned_job(
    daily_enrichment_job,
    hour_of_day=_environment.schedule_hour,
    minute_of_hour=_environment.schedule_minute,
    name="daily_enrichment_schedule",
)
