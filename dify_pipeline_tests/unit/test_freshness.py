"""The freshness check: yesterday's day must be published by PUBLISHED_BY_HOUR in the partitions' zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from dagster._core.test_utils import freeze_time

from dify_pipeline.checks import build_freshness_checks

ZONE = "Asia/Shanghai"
PARTITIONS = dg.DailyPartitionsDefinition(start_date="2026-11-01", timezone=ZONE)
PUBLISHED = ["tickets_parquet", "tickets_elasticsearch"]


def evaluate(instance, at: datetime) -> dict[str, tuple[bool, str]]:
    """asset → (passed, description) of the freshness check, run at `at` as the sensor would start it."""
    checks, sensor = build_freshness_checks(published_by_hour=8, timezone=ZONE)
    defs = dg.Definitions(assets=[dg.AssetSpec(name, partitions_def=PARTITIONS) for name in PUBLISHED],
                          asset_checks=checks, sensors=[sensor])
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(), asset_check_selection={key for c in checks for key in c.check_keys})
    with freeze_time(at):
        result = job.execute_in_process(instance=instance, raise_on_error=False)
    return {e.event_specific_data.asset_key.path[-1]: (e.event_specific_data.passed, e.event_specific_data.description)
            for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def publish(instance, asset: str, day: str) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, partition=day))


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def test_yesterday_unpublished_after_the_hour_fails_and_published_passes(instance):
    publish(instance, "tickets_parquet", "2026-11-19")
    publish(instance, "tickets_elasticsearch", "2026-11-19")
    after = datetime(2026, 11, 21, 8, 30, tzinfo=ZoneInfo(ZONE))  # 2026-11-20 is due since 08:00
    results = evaluate(instance, after)
    assert set(results) == set(PUBLISHED)
    assert not any(passed for passed, _ in results.values())
    assert "2026-11-20" in results["tickets_parquet"][1]

    publish(instance, "tickets_parquet", "2026-11-20")
    results = evaluate(instance, after)
    assert results["tickets_parquet"][0] and not results["tickets_elasticsearch"][0]


def test_before_the_hour_only_the_day_before_yesterday_is_due(instance):
    publish(instance, "tickets_parquet", "2026-11-19")
    publish(instance, "tickets_elasticsearch", "2026-11-19")
    before = datetime(2026, 11, 21, 7, 59, tzinfo=ZoneInfo(ZONE))
    assert all(passed for passed, _ in evaluate(instance, before).values())


def test_the_sensor_that_runs_the_checks_is_on_by_default():
    checks, sensor = build_freshness_checks(published_by_hour=8, timezone=ZONE)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert {key.name for c in checks for key in c.check_keys} == {"freshness_check"}


def test_a_deadline_not_after_the_nightly_run_is_refused_at_load():
    from dify_pipeline.environment import ConfigurationError, read_environment

    with pytest.raises(ConfigurationError) as raised:
        read_environment({"SCHEDULE_HOUR": "9", "PUBLISHED_BY_HOUR": "8"}, require=False)
    assert "PUBLISHED_BY_HOUR=8 is not after SCHEDULE_HOUR=9" in str(raised.value)
    assert read_environment({}, require=False).published_by_hour == 8
