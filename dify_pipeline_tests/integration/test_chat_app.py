"""A chat app through the enrichment step on real services: the contract's `app.query` column is sent as each
record's message (POST /chat-messages), its answer lands in the row, and the message is part of the cache key."""

from __future__ import annotations

import pyarrow as pa
import pytest

from dify_pipeline.contract import AppContract, tickets_contract
from dify_pipeline.resources.storage import ObjectStorage
from dify_pipeline.stages import day_folder
from dify_pipeline_dev.emulators.dify import DifyApp, DifyEmulatorConfig
from dify_pipeline_dev.emulators.dify_answers import answer_for
from dify_pipeline_tests.integration.pipeline import DAY, DIFY_KEY, check_results, materialization_metadata, run_day

SUBJECT_ONLY_FORM = [{"text-input": {"label": "Subject", "variable": "subject", "required": True, "max_length": 200,
                                     "default": ""}}]


def chat_contract(query: str = "body"):
    return tickets_contract(app=AppContract(mode="chat", inputs={"subject": "subject"}, query=query))


def enriched_rows(env) -> pa.Table:
    stage = ObjectStorage(url=env["PIPELINE_STORAGE_URL"], s3_endpoint_url=env["S3_ENDPOINT_URL"])
    return pa.concat_tables([stage.read_parquet(path) for path in stage.list_files(
        day_folder(stage, "enriched_tickets", DAY))])


@pytest.mark.parametrize(("app_mode", "response_mode"), [("chat", "blocking"), ("advanced-chat", "streaming")])
def test_a_chat_app_answers_each_record_with_its_column_sent_as_the_message(
    pipeline_env, source_tickets, dagster_instance, dify_emulator, monkeypatch, app_mode, response_mode
):
    """A chatbot and a chatflow: both are `chat` apps to the pipeline, reached at /chat-messages."""
    dify_emulator.configure(DifyEmulatorConfig(latency_ms=5, apps=[
        DifyApp(api_key=DIFY_KEY, mode=app_mode, user_input_form=SUBJECT_ONLY_FORM)]))
    monkeypatch.setenv("DIFY_RESPONSE_MODE", response_mode)
    result = run_day(dagster_instance, contract=chat_contract())
    enriched = materialization_metadata(result, "enriched_tickets")
    assert result.success and enriched["failed"] == 0 and enriched["requests_sent"] > 0
    requests = [r for r in dify_emulator.requests() if r["path"] == "/v1/chat-messages"]
    assert len(requests) == enriched["requests_sent"] == dify_emulator.stats()["paid_runs"]
    assert all(set(r["body"]["inputs"]) == {"subject"} and r["body"]["query"] for r in requests)
    assert dagster_instance.get_run_by_id(result.run_id).tags["dify/app_mode"] == "chat"

    # Each row carries what the app answered for its subject and its message: the body column.
    rows = enriched_rows(pipeline_env).to_pylist()
    answered = [row for row in rows if row["dify_status"] == "succeeded"]
    assert len(answered) == enriched["rows"] - enriched["refused_inputs"] > 0
    for row in answered:
        expected = answer_for({"subject": row["subject"], "query": row["body"]})
        assert (row["category"], row["sentiment"]) == (expected["category"], expected["sentiment"])
        assert row["summary"] == expected["summary"].strip()  # text outputs are stored trimmed
    assert check_results(result)["failure_rate_below_threshold"] is True

    # The message is part of the cache key: the same messages again cost nothing, other messages are paid for.
    dify_emulator.reset()
    again = materialization_metadata(run_day(dagster_instance, contract=chat_contract()), "enriched_tickets")
    assert again["requests_sent"] == 0 == dify_emulator.stats()["paid_runs"]
    other = materialization_metadata(run_day(dagster_instance, contract=chat_contract(query="subject")),
                                     "enriched_tickets")
    assert other["requests_sent"] == dify_emulator.stats()["paid_runs"] > 0
