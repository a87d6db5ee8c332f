"""The partitions of a code location: a day in the configured time zone (PIPELINE_TIMEZONE, PIPELINE_START_DATE)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg


def daily_partitions(start_date: str, timezone: str) -> dg.DailyPartitionsDefinition:
    """One partition per day in `timezone`, from `start_date` (YYYY-MM-DD) on."""
    return dg.DailyPartitionsDefinition(start_date=start_date, timezone=timezone)


def day_window(partition_key: str, timezone: str) -> tuple[datetime, datetime]:
    """The half-open window [start, end) of a day, as aware datetimes in `timezone`.

    The end is the next local midnight, so a day around a daylight-saving change lasts 23 or 25 hours.
    """
    zone = ZoneInfo(timezone)
    day = datetime.strptime(partition_key, "%Y-%m-%d")
    start = day.replace(tzinfo=zone)
    end = (day + timedelta(days=1)).replace(tzinfo=zone)
    return start, end
