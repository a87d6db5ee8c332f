"""The nightly run of an enrichment: the job over its whole flow, and its schedule for the day that just ended."""

from __future__ import annotations

import dagster as dg

from dify_pipeline.chain import Chain
from dify_pipeline.checks import freshness_check_keys


def build_daily_job(chain: Chain) -> dg.UnresolvedAssetJobDefinition:
    """The day's assets of the enrichment's group and their checks; not the freshness checks, which judge the
    deployment now, not one day, and run from their sensor (checks.build_freshness_checks)."""
    return dg.define_asset_job(
        chain.job_name,
        selection=dg.AssetSelection.groups(chain.group) - dg.AssetSelection.checks(*freshness_check_keys(chain)),
    )


def build_daily_schedule(job: dg.UnresolvedAssetJobDefinition, chain: Chain, hour: int, minute: int):
    """At `hour`:`minute` (SCHEDULE_HOUR, SCHEDULE_MINUTE) in the partitions' zone, for the last complete day there.
    Stopped until turned on in the UI, so a deploy never spends money by surprise."""
    return dg.build_schedule_from_partitioned_job(job, hour_of_day=hour, minute_of_hour=minute,
                                                  name=chain.schedule_name)
