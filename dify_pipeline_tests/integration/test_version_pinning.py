"""A day is answered by one published version of a workflow app, whatever is published meanwhile: republished in
the middle of a day's run, between two runs of one day, or while other days of a backfill reuse its answers
(real MariaDB, the PostgreSQL instance, moto S3 and the Dify emulator)."""

from __future__ import annotations

import threading
from datetime import date

import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from dify_pipeline.contract import AppContract, tickets_contract
from dify_pipeline.resources.storage import ObjectStorage
from dify_pipeline.stages import day_folder
from dify_pipeline_dev.demo.sample_data import generate_tickets, insert_tickets
from dify_pipeline_dev.emulators.dify import DifyApp, DifyEmulatorConfig
from dify_pipeline_tests.integration.pipeline import DAY, DIFY_KEY, check_results, materialization_metadata, run_day
from dify_pipeline_tests.integration.test_enriched_tickets import DAY_BEFORE, add_day_before_with_the_same_texts


def enriched_workflow_ids(env, day: str = DAY) -> set[str]:
    """The workflow_id of every row of the day's enriched stage."""
    stage = ObjectStorage(url=env["PIPELINE_STORAGE_URL"], s3_endpoint_url=env["S3_ENDPOINT_URL"])
    tables = [stage.read_parquet(path, columns=["dify_workflow_id", "dify_status"])
              for path in stage.list_files(day_folder(stage, "enriched_tickets", day))]
    table = pa.concat_tables(tables)
    return {wid for wid, status in zip(table.column("dify_workflow_id").to_pylist(),
                                       table.column("dify_status").to_pylist()) if status == "succeeded"}


def republish_after(emulator, runs: int) -> tuple[threading.Thread, dict]:
    """Publish a new version of the app once `runs` runs were paid (in the middle of the day's run)."""
    seen: dict = {}

    def watch() -> None:
        while emulator.stats()["paid_runs"] < runs:
            threading.Event().wait(0.002)
        seen["paid_at_publish"] = emulator.stats()["paid_runs"]
        seen["workflow_id"] = emulator.publish(DIFY_KEY)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, seen


def add_late_tickets(env, count: int = 50, day: str = DAY):
    """New tickets for `day`, with texts no other day has (returned)."""
    extra = generate_tickets(date.fromisoformat(day), count=count, seed=99, timezone="UTC")
    extra["id"] = extra["id"] + 5_000_000
    extra["body"] = extra["body"] + " (late ticket)"
    engine = sa.create_engine(env["SOURCE_DATABASE_URL"])
    insert_tickets(engine, "tickets", extra)
    engine.dispose()
    return extra


def slow_app(emulator) -> str:
    """Runs of 20 ms, so a republish lands while the day is being answered; returns the version published now."""
    emulator.configure(DifyEmulatorConfig(apps=[DifyApp(api_key=DIFY_KEY)], latency_ms=20))
    return emulator.config.apps[0].workflow_id


@pytest.mark.parametrize("cache", ["on", "off"])
def test_a_republish_in_the_middle_of_the_day_leaves_the_day_on_the_version_of_its_first_answer(
    pipeline_env, source_tickets, dagster_instance, dify_emulator, monkeypatch, cache
):
    """With the cache off there is no database to keep the pin in: the day is pinned for the run itself."""
    monkeypatch.setenv("RESULT_CACHE_ENABLED", "true" if cache == "on" else "false")
    first_version = slow_app(dify_emulator)
    watcher, seen = republish_after(dify_emulator, runs=30)
    result = run_day(dagster_instance)
    watcher.join(timeout=5)
    enriched = materialization_metadata(result, "enriched_tickets")
    assert result.success and enriched["failed"] == 0
    assert seen["paid_at_publish"] < enriched["requests_sent"]  # the republish came before the day was done
    assert dify_emulator.config.apps[0].workflow_id == seen["workflow_id"] != first_version
    assert dify_emulator.stats()["runs_by_workflow_id"] == {first_version: enriched["requests_sent"]}
    assert enriched_workflow_ids(pipeline_env) == {first_version}
    assert enriched["dify_pinned_workflow_id"] == first_version
    assert check_results(result)["single_app_version"] is True


def test_without_pinning_the_same_republish_mixes_two_versions_in_the_day(
    pipeline_env, source_tickets, dagster_instance, dify_emulator
):
    slow_app(dify_emulator)
    watcher, seen = republish_after(dify_emulator, runs=30)
    result = run_day(dagster_instance, contract=tickets_contract(app=AppContract(pin_version=False)))
    watcher.join(timeout=5)
    assert result.success and check_results(result)["single_app_version"] is False
    assert len(dify_emulator.stats()["runs_by_workflow_id"]) == 2 == len(enriched_workflow_ids(pipeline_env))


def test_a_later_run_of_the_day_asks_its_pinned_version_after_a_republish(
    pipeline_env, source_tickets, dagster_instance, dify_emulator
):
    first_version = dify_emulator.config.apps[0].workflow_id
    first = run_day(dagster_instance)
    sent_first = materialization_metadata(first, "enriched_tickets")["requests_sent"]
    dify_emulator.publish(DIFY_KEY)
    add_late_tickets(pipeline_env)
    second = run_day(dagster_instance)
    enriched = materialization_metadata(second, "enriched_tickets")
    assert second.success and 0 < enriched["requests_sent"] <= 50
    runs = dify_emulator.stats()["runs_by_workflow_id"]
    assert runs == {first_version: sent_first + enriched["requests_sent"]}  # the new version ran nothing
    paths = {request["path"] for request in dify_emulator.requests()}
    assert f"/v1/workflows/{first_version}/run" in paths
    assert enriched_workflow_ids(pipeline_env) == {first_version}
    assert check_results(second)["single_app_version"] is True


def test_a_pinned_version_deleted_in_dify_stops_the_day_and_a_new_cache_version_answers_it_anew(
    pipeline_env, source_tickets, dagster_instance, dify_emulator
):
    first_version = dify_emulator.config.apps[0].workflow_id
    assert run_day(dagster_instance).success
    new_version = dify_emulator.publish(DIFY_KEY)
    dify_emulator.delete_version(DIFY_KEY, first_version)
    add_late_tickets(pipeline_env)
    stopped = run_day(dagster_instance)
    assert not stopped.success
    [failure] = [e for e in stopped.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.user_failure_data.description
    assert f"pinned to app version {first_version}" in message and "cache_version" in message
    again = run_day(dagster_instance, contract=tickets_contract(cache_version="v2"))
    assert again.success and check_results(again)["single_app_version"] is True
    assert enriched_workflow_ids(pipeline_env) == {new_version}


@pytest.mark.parametrize("policy", ["reuse", "reask"])
def test_cached_answers_of_another_version_are_reused_for_free_or_asked_again_and_paid(
    pipeline_env, source_tickets, dagster_instance, dify_emulator, policy
):
    """The day before, answered by the first version, has the same texts as the day; the app is republished and
    the day gets new tickets too: its first answer pins it to the new version."""
    old_version = dify_emulator.config.apps[0].workflow_id
    add_day_before_with_the_same_texts(pipeline_env, source_tickets)
    contract = tickets_contract(app=AppContract(other_version_answers=policy))
    before = run_day(dagster_instance, DAY_BEFORE, contract=contract)
    answered_before = materialization_metadata(before, "enriched_tickets")["requests_sent"]
    new_version = dify_emulator.publish(DIFY_KEY)
    add_late_tickets(pipeline_env)
    dify_emulator.reset()

    day = run_day(dagster_instance, contract=contract)
    enriched = materialization_metadata(day, "enriched_tickets")
    paid = dify_emulator.stats()["paid_runs"]
    assert day.success and enriched["requests_sent"] == paid
    assert dify_emulator.stats()["runs_by_workflow_id"] == {new_version: paid}
    late = paid - enriched["asked_again_other_version"]  # the new tickets' distinct texts
    assert 0 < late <= 50
    if policy == "reuse":  # free, and the day holds both versions' answers: flagged
        assert enriched["asked_again_other_version"] == 0 and enriched["answered_from_cache"] > 0
        assert enriched_workflow_ids(pipeline_env) == {old_version, new_version}
        assert check_results(day)["single_app_version"] is False
    else:  # every answer of the first version asked again of the day's version: paid, and one version
        assert enriched["asked_again_other_version"] == answered_before
        assert enriched_workflow_ids(pipeline_env) == {new_version}
        assert check_results(day)["single_app_version"] is True
        dify_emulator.reset()
        rerun = materialization_metadata(run_day(dagster_instance, contract=contract), "enriched_tickets")
        assert rerun["requests_sent"] == 0 == dify_emulator.stats()["paid_runs"]  # the new answers replaced the old


def test_a_day_answered_before_by_several_versions_is_pinned_to_most_and_asks_only_the_rest_again(
    pipeline_env, source_tickets, dagster_instance, dify_emulator
):
    """Nothing new to send on the day before: it is pinned, for free, to the version of most of its cached answers,
    and only the others are asked again."""
    old_version = dify_emulator.config.apps[0].workflow_id
    unpinned = tickets_contract(app=AppContract(pin_version=False))
    assert run_day(dagster_instance, contract=unpinned).success  # DAY's texts, by the first version
    new_version = dify_emulator.publish(DIFY_KEY)
    late = add_late_tickets(pipeline_env, count=20)
    late_day = materialization_metadata(run_day(dagster_instance, contract=unpinned), "enriched_tickets")
    assert late_day["requests_sent"] > 0  # the late tickets, by the new version
    add_day_before_with_the_same_texts(pipeline_env, pd.concat([source_tickets, late]))
    dify_emulator.reset()

    other_day = run_day(dagster_instance, DAY_BEFORE, contract=tickets_contract(
        app=AppContract(other_version_answers="reask")))
    enriched = materialization_metadata(other_day, "enriched_tickets")
    assert enriched["dify_pinned_workflow_id"] == old_version != new_version
    assert enriched["requests_sent"] == enriched["asked_again_other_version"] == late_day["requests_sent"]
    assert dify_emulator.stats()["runs_by_workflow_id"] == {old_version: late_day["requests_sent"]}
    assert enriched_workflow_ids(pipeline_env, DAY_BEFORE) == {old_version}
    assert check_results(other_day)["single_app_version"] is True
