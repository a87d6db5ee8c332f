"""The one partitions definition: a day in the configured time zone."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

# Every check is partitioned like its asset (AssetCheckSpec(partitions_def=daily_partitions)), so its results
# carry their day. Dagster 1.13 calls that argument a preview; the warning says nothing else, so it is not shown.
warnings.filterwarnings("ignore", "Specifying a partitions_def on an AssetCheckSpec", dg.PreviewWarning)

from dify_pipeline.environment import read_environment

# Read at load time: a partitions definition cannot change between runs of one deployment.
_environment = read_environment(require=False)
PIPELINE_TIMEZONE = _environment.pipeline_timezone
PIPELINE_START_DATE = _environment.pipeline_start_date

daily_partitions = dg.DailyPartitionsDefinition(start_date=PIPELINE_START_DATE, timezone=PIPELINE_TIMEZONE)


def day_window(partition_key: str, timezone: str = PIPELINE_TIMEZONE) -> tuple[datetime, datetime]:
    """The half-open window [start, end) of a day, as aware datetimes in `timezone`.

    The end is the next local midnight, so a day around a daylight-saving change lasts 23 or 25 hours.
    """
    zone = ZoneInfo(timezone)
    day = datetime.strptime(partition_key, "%Y-%m-%d")
    start = day.replace(tzinfo=zone)
    end = (day + timedelta(days=1)).replace(tzinfo=zone)
    return start, end
