"""enriched_tickets on real services: paying once (cache across days and runs, its version key), retries of
failed records, bad days, app versions, and the input contract checked before any paid call."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from dify_pipeline.contract import TICKET_OUTPUTS, AppContract, OutputField, tickets_contract
from dify_pipeline_dev.demo.sample_data import generate_tickets, insert_tickets
from dify_pipeline_dev.emulators.dify import DifyApp, DifyEmulatorConfig, Fault
from dify_pipeline_tests.integration.pipeline import DAY, DIFY_KEY, check_results, materialization_metadata, run_day

DAY_BEFORE = (date.fromisoformat(DAY) - timedelta(days=1)).isoformat()  # DAY is yesterday: no later partition yet


def add_day_before_with_the_same_texts(env, tickets):
    """The day before holds exactly DAY's texts under new ids (the same complaints come in every day)."""
    copy = tickets[tickets.created_at.dt.strftime("%Y-%m-%d") == DAY].copy()
    copy["id"] = copy["id"] + 1_000_000
    copy["created_at"] = copy["created_at"] - timedelta(days=1)
    copy["updated_at"] = copy["updated_at"] - timedelta(days=1)
    engine = sa.create_engine(env["SOURCE_DATABASE_URL"])
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM tickets WHERE created_at < :day"), {"day": DAY})
    insert_tickets(engine, "tickets", copy)
    engine.dispose()


def test_identical_inputs_on_another_day_are_answered_from_the_cache(
    pipeline_env, source_tickets, dagster_instance, dify_emulator
):
    add_day_before_with_the_same_texts(pipeline_env, source_tickets)
    first = run_day(dagster_instance, DAY)
    paid = dify_emulator.stats()["paid_runs"]
    second = run_day(dagster_instance, DAY_BEFORE)
    assert first.success and second.success
    enriched = materialization_metadata(second, "enriched_tickets")
    assert enriched["rows"] > 0 and enriched["requests_sent"] == 0 and enriched["cache_hits"] == enriched["rows"]
    assert enriched["tokens_spent_this_run"] == 0 < enriched["total_tokens"]
    assert dify_emulator.stats()["paid_runs"] == paid


def test_a_new_cache_version_pays_for_fresh_answers(pipeline_env, source_tickets, dagster_instance, dify_emulator):
    first = run_day(dagster_instance)
    sent_first = materialization_metadata(first, "enriched_tickets")["requests_sent"]
    again = run_day(dagster_instance, contract=tickets_contract(cache_version="prompt-v2"))
    enriched = materialization_metadata(again, "enriched_tickets")
    assert again.success and enriched["requests_sent"] == sent_first > 0 and enriched["cache_hits"] < enriched["rows"]


def test_a_bad_day_is_not_published_and_the_next_run_retries_only_the_failed_records(
    pipeline_env, source_tickets, dagster_instance, dify_emulator
):
    dify_emulator.configure(DifyEmulatorConfig(apps=[DifyApp(api_key=DIFY_KEY)], latency_ms=5,
                                               faults=[Fault(kind="failed_run", match="退款")]))
    bad = run_day(dagster_instance)
    assert dagster_instance.get_run_by_id(bad.run_id).tags["dify_pipeline/blocked_by"] == "failure_rate_below_threshold"
    assert check_results(bad)["failure_rate_below_threshold"] is False
    enriched = materialization_metadata(bad, "enriched_tickets")
    assert enriched["failed"] > 0 and enriched["failures_by_code"] == {"run_failed": enriched["failed"]}
    assert not [e for e in bad.get_asset_materialization_events() if e.asset_key.path[0].startswith("tickets_")]

    app = dify_emulator.config.apps[0]  # the same app, fixed: the day stays pinned to its published version
    dify_emulator.configure(DifyEmulatorConfig(apps=[app], latency_ms=5))
    good = run_day(dagster_instance)
    assert good.success
    retried = materialization_metadata(good, "enriched_tickets")
    assert retried["failed"] == 0 and 0 < retried["requests_sent"] <= enriched["failed"]
    assert materialization_metadata(good, "tickets_parquet")["rows"] == retried["rows"]


def test_a_day_answered_by_two_app_versions_is_flagged_when_pinning_is_off(
    pipeline_env, source_tickets, dagster_instance, dify_emulator
):
    unpinned = tickets_contract(app=AppContract(pin_version=False))  # pinned, see test_version_pinning.py
    first = run_day(dagster_instance, contract=unpinned)
    assert check_results(first)["single_app_version"] is True
    # The app is republished (new workflow_id) and new tickets arrive for the same day.
    dify_emulator.configure(DifyEmulatorConfig(apps=[DifyApp(api_key=DIFY_KEY, workflow_id="republished-workflow")],
                                               latency_ms=5))
    extra = generate_tickets(date.fromisoformat(DAY), count=50, seed=99, timezone="UTC")
    extra["id"] = extra["id"] + 5_000_000
    extra["body"] = extra["body"] + " (late ticket)"
    engine = sa.create_engine(pipeline_env["SOURCE_DATABASE_URL"])
    insert_tickets(engine, "tickets", extra)
    engine.dispose()
    second = run_day(dagster_instance, contract=unpinned)
    assert check_results(second)["single_app_version"] is False
    assert "republished-workflow" in materialization_metadata(second, "enriched_tickets")["dify_workflow_ids"]


def test_an_input_mapping_the_app_does_not_declare_fails_before_any_paid_call(
    pipeline_env, source_tickets, dagster_instance, dify_emulator
):
    undeclared = AppContract(inputs={"subject": "subject", "text": "body"})
    result = run_day(dagster_instance, contract=tickets_contract(app=undeclared))
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.user_failure_data.description
    assert "text" in message and "body" in message and "does not declare" in message
    assert dify_emulator.stats()["paid_runs"] == 0


def test_a_contract_failure_is_judged_again_for_free_and_a_new_category_list_rejudges_it_from_the_cache(
    pipeline_env, source_tickets, dagster_instance, dify_emulator
):
    """The app answers a label outside the list: paid once, kept in the cache, a failed row; the next run pays 0
    and the row stays failed; adding the label to the contract's allowed categories turns the rows into successes,
    paying 0."""
    from dify_pipeline.contract import DEFAULT_CATEGORIES
    from dify_pipeline_dev.emulators.dify_answers import INVALID_CATEGORY

    dify_emulator.configure(DifyEmulatorConfig(apps=[DifyApp(api_key=DIFY_KEY)], latency_ms=5,
                                               faults=[Fault(kind="invalid_category", match="退款")]))
    first = run_day(dagster_instance)
    judged = materialization_metadata(first, "enriched_tickets")
    assert judged["failures_by_code"] == {"invalid_category": judged["failed"]} and judged["failed"] > 0
    paid = dify_emulator.stats()["paid_runs"]
    assert paid == judged["requests_sent"] > 0

    again = run_day(dagster_instance)
    rejudged = materialization_metadata(again, "enriched_tickets")
    assert dify_emulator.stats()["paid_runs"] == paid  # nothing paid again
    assert rejudged["requests_sent"] == 0 and rejudged["failed"] == judged["failed"]

    category = OutputField(type="label", allowed=[*DEFAULT_CATEGORIES, INVALID_CATEGORY])
    wider = tickets_contract(outputs={**TICKET_OUTPUTS, "category": category})
    fixed = run_day(dagster_instance, contract=wider)
    accepted = materialization_metadata(fixed, "enriched_tickets")
    assert dify_emulator.stats()["paid_runs"] == paid
    assert fixed.success and accepted["failed"] == 0 and accepted["requests_sent"] == 0
    assert accepted["labels"]["category"][INVALID_CATEGORY] == judged["failed"]


def test_a_blocked_day_says_why_in_its_check_with_samples(
    pipeline_env, source_tickets, dagster_instance, dify_emulator
):
    dify_emulator.configure(DifyEmulatorConfig(apps=[DifyApp(api_key=DIFY_KEY)], latency_ms=5,
                                               faults=[Fault(kind="failed_run", match="退款")]))
    bad = run_day(dagster_instance)
    enriched = materialization_metadata(bad, "enriched_tickets")
    [check] = [e.event_specific_data for e in bad.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
               and e.event_specific_data.check_name == "failure_rate_below_threshold"]
    message = check.description
    assert f"{enriched['failed']} of {enriched['rows']} records failed" in message
    assert "threshold 2.0%" in message and "run_failed ×" in message
    samples = enriched["failure_samples"]["run_failed"]
    assert samples["count"] == enriched["failed"] and len(samples["records"]) == 5
    assert all(str(key) in message for key in samples["records"]) and samples["example"][:40] in message
    assert "what to do" in message
    assert check.metadata["failure_samples"].value["run_failed"]["records"] == samples["records"]


def test_cost_is_estimated_from_token_prices_and_a_rerun_spends_nothing(
    pipeline_env, source_tickets, dagster_instance, dify_emulator, monkeypatch
):
    monkeypatch.setenv("DIFY_RESPONSE_MODE", "blocking")  # a blocking workflow run carries tokens, no price
    priced = tickets_contract(price_per_1k_input_tokens=0.5, price_per_1k_output_tokens=1.5, price_currency="EUR")
    first = materialization_metadata(run_day(dagster_instance, contract=priced), "enriched_tickets")
    assert first["cost_is_estimate"] is True and first["cost_currency"] == "EUR"
    assert first["cost_day"] == first["cost_spent_this_run"] > 0
    again = materialization_metadata(run_day(dagster_instance, contract=priced), "enriched_tickets")
    assert again["cost_spent_this_run"] == 0 and again["cost_day"] == first["cost_day"]
    assert again["answered_from_cache"] == again["rows"] and again["duplicates_within_day"] == 0


@pytest.mark.parametrize("app_mode,response_mode", [("workflow", "streaming"), ("completion", "blocking")])
def test_the_day_costs_what_dify_priced_from_stream_node_events_and_completion_usage(
    pipeline_env, source_tickets, dagster_instance, dify_emulator, monkeypatch, app_mode, response_mode
):
    dify_emulator.configure(DifyEmulatorConfig(apps=[DifyApp(api_key=DIFY_KEY, mode=app_mode)], latency_ms=5))
    monkeypatch.setenv("DIFY_APP_MODE", app_mode)
    monkeypatch.setenv("DIFY_RESPONSE_MODE", response_mode)
    priced = tickets_contract(price_per_1k_input_tokens=0.5, price_per_1k_output_tokens=1.5, price_currency="EUR",
                              app=AppContract(mode=app_mode))  # a contract given in full: DIFY_APP_MODE is its default
    first = materialization_metadata(run_day(dagster_instance, contract=priced), "enriched_tickets")
    assert first["cost_is_estimate"] is False and first["cost_currency"] == "USD"  # Dify's price, not the estimate
    assert isinstance(first["cost_day"], float) and first["cost_day"] == first["cost_spent_this_run"] > 0
    again = materialization_metadata(run_day(dagster_instance, contract=priced), "enriched_tickets")
    assert again["cost_spent_this_run"] == 0 and again["cost_day"] == first["cost_day"]


def test_with_the_cache_off_duplicates_within_the_day_are_not_counted_as_cache_hits(
    pipeline_env, source_tickets, dagster_instance, dify_emulator, monkeypatch
):
    monkeypatch.setenv("RESULT_CACHE_ENABLED", "false")
    enriched = materialization_metadata(run_day(dagster_instance), "enriched_tickets")
    assert enriched["cache_hits"] == enriched["answered_from_cache"] == 0
    assert enriched["duplicates_within_day"] > 0
    sources = enriched["answered_this_run"] + enriched["duplicates_within_day"] + enriched["refused_inputs"]
    assert sources == enriched["rows"]
    assert enriched["requests_sent"] == enriched["answered_this_run"] == dify_emulator.stats()["paid_runs"]
