import json
import math
from datetime import UTC, date, datetime
from decimal import Decimal

from dify_pipeline.contract import TICKET_OUTPUTS, parse_contract
from dify_pipeline.publish.documents import MAPPING_VERSION, index_mapping, to_documents
from dify_pipeline.schemas import CLEAN_FIELDS, ENRICHMENT_FIELDS

TEXT_COLUMNS = ["subject", "body"]
TIMESTAMP_COLUMNS = ["created_at", "updated_at"]
CREATED = datetime(2026, 3, 8, 9, 15, 0, tzinfo=UTC)


def mapping() -> dict:
    return index_mapping(TEXT_COLUMNS, TIMESTAMP_COLUMNS, TICKET_OUTPUTS)


def enriched_row(**overrides) -> dict:
    """A row as tickets_elasticsearch reads it from the enriched Parquet (source, clean and enrichment columns)."""
    row = {
        "id": 1042, "subject": "快递没到", "body": "三天了还没收到", "created_at": CREATED, "updated_at": None,
        "customer_tier": "vip", "amount": Decimal("129.90"), "due_on": date(2026, 3, 10),
        "record_key": "tickets:1042", "text_truncated": False, "pii_masked": 2, "shard": 3,
        "category": "物流问题", "summary": "包裹三天未到。", "sentiment": "negative",
        "outputs_json": '{"category": "物流问题"}', "dify_status": "succeeded", "error_code": None,
        "error_message": None, "attempts": 1, "latency_ms": 812.5, "total_tokens": 321, "total_price": 0.0012,
        "currency": "USD", "dify_run_id": "run-1", "dify_workflow_id": "wf-1", "cache_hit": False,
        "inputs_truncated": False, "enriched_at": datetime(2026, 3, 9, 1, 0, tzinfo=UTC),
        "app_identity": "app-3f2a", "cache_version": "v1", "pipeline_version": "dify_pipeline/0.1.0",
    }
    return {**row, **overrides}


def documents(rows) -> list[dict]:
    return list(to_documents(rows, "2026-03-08", "run-abc", set(mapping()["properties"]), "tickets-enriched"))


# -- mapping ---------------------------------------------------------------------------------------


def test_mapping_is_strict_at_the_top_level_and_versioned():
    result = mapping()
    assert result["dynamic"] == "strict"
    assert result["_meta"] == {"dify_pipeline_mapping_version": MAPPING_VERSION}


def test_attributes_stay_open_for_the_sources_own_columns():
    assert mapping()["properties"]["attributes"] == {"type": "object", "dynamic": True}


def test_configured_text_and_timestamp_columns_are_typed():
    properties = mapping()["properties"]
    assert properties["subject"] == properties["body"] == {"type": "text"}
    assert properties["created_at"] == properties["updated_at"] == {"type": "date"}


def test_every_indexed_pipeline_column_has_a_type():
    properties = mapping()["properties"]
    pipeline_columns = set(ENRICHMENT_FIELDS.names) | set(CLEAN_FIELDS.names)
    assert pipeline_columns - {"outputs_json"} <= set(properties)
    assert "outputs_json" not in properties and "shard" not in properties
    assert {"dt", "load_id"} <= set(properties)


def test_label_columns_are_keywords_and_the_summary_is_full_text():
    properties = mapping()["properties"]
    assert properties["category"]["type"] == properties["sentiment"]["type"] == "keyword"
    assert properties["summary"]["type"] == "text"


def test_mapping_differs_only_in_the_columns_asked_for():
    bare = index_mapping([], [], TICKET_OUTPUTS)["properties"]
    assert "subject" not in bare and "created_at" not in bare
    assert set(mapping()["properties"]) - set(bare) == set(TEXT_COLUMNS) | set(TIMESTAMP_COLUMNS)


def test_each_declared_output_is_mapped_by_its_type_and_a_new_one_is_one_more_field():
    outputs = parse_contract({"name": "reviews", "outputs": {
        "sentiment": {"type": "label", "allowed": ["positive", "negative"]}, "score": {"type": "integer"},
        "aspects": {"type": "list"}, "confidence": {"type": "number"}, "spam": {"type": "boolean"},
        "note": {"type": "text"}, "details": {"type": "json"}}}).outputs
    properties = index_mapping([], [], outputs)["properties"]
    assert {name: properties[name]["type"] for name in outputs} == {
        "sentiment": "keyword", "score": "long", "aspects": "keyword", "confidence": "double", "spam": "boolean",
        "note": "text", "details": "text"}
    assert properties["details"]["index"] is False  # the app's JSON is kept, not indexed
    assert "category" not in properties  # nothing of the ticket example in another contract's mapping
    fewer = index_mapping([], [], {name: outputs[name] for name in list(outputs)[:-1]})["properties"]
    assert set(properties) - set(fewer) == {"details"}


# -- documents -------------------------------------------------------------------------------------


def test_document_id_is_the_record_key_so_a_reload_overwrites():
    [document] = documents([enriched_row()])
    assert document["_id"] == "tickets:1042"
    assert document["_op_type"] == "index"
    assert document["_index"] == "tickets-enriched"


def test_document_carries_the_day_and_the_load():
    [document] = documents([enriched_row()])
    assert document["_source"]["dt"] == "2026-03-08"
    assert document["_source"]["load_id"] == "run-abc"


def test_source_columns_not_in_the_mapping_go_under_attributes():
    [document] = documents([enriched_row()])
    source = document["_source"]
    assert source["attributes"] == {"id": 1042, "customer_tier": "vip", "amount": 129.9, "due_on": "2026-03-10"}
    assert source["subject"] == "快递没到" and source["category"] == "物流问题"


def test_every_top_level_field_is_in_the_strict_mapping():
    properties = set(mapping()["properties"])
    for document in documents([enriched_row(), enriched_row(record_key="tickets:7", extra_column="x")]):
        assert set(document["_source"]) <= properties


def test_outputs_json_and_shard_are_not_indexed():
    [document] = documents([enriched_row()])
    source = document["_source"]
    assert "outputs_json" not in source and "shard" not in source
    assert "outputs_json" not in source["attributes"] and "shard" not in source["attributes"]


def test_datetimes_become_iso_text():
    [document] = documents([enriched_row()])
    source = document["_source"]
    assert datetime.fromisoformat(source["created_at"]) == CREATED
    assert source["enriched_at"] == "2026-03-09T01:00:00+00:00"
    assert source["updated_at"] is None


def test_nan_and_infinity_become_null():
    [document] = documents([enriched_row(latency_ms=math.nan, total_price=math.inf, score=-math.inf)])
    source = document["_source"]
    assert source["latency_ms"] is None
    assert source["total_price"] is None
    assert source["attributes"]["score"] is None


def test_documents_are_valid_json():
    row = enriched_row(latency_ms=math.nan, raw=b"\xff\xfebytes", amount=Decimal("1.10"))
    for document in documents([row]):
        json.dumps(document["_source"], allow_nan=False)
        assert document["_source"]["attributes"]["raw"].endswith("bytes")


def test_one_document_per_row_in_order():
    rows = [enriched_row(record_key=f"tickets:{i}") for i in range(5)]
    assert [d["_id"] for d in documents(rows)] == [r["record_key"] for r in rows]


def test_a_row_with_only_pipeline_columns_has_empty_attributes():
    [document] = documents([{"record_key": "tickets:1", "category": "其他"}])
    assert document["_source"]["attributes"] == {}


# -- documents from record batches -----------------------------------------------------------------

import pyarrow as pa  # noqa: E402

from dify_pipeline.publish.documents import batch_documents, day_query  # noqa: E402
from dify_pipeline.resources.search import BulkOutcome  # noqa: E402


def as_instants(document: dict) -> dict:
    """A document with its ISO-8601 timestamps parsed, so two spellings of one instant compare equal."""
    source = dict(document["_source"])
    for name in ("created_at", "updated_at", "enriched_at"):
        if isinstance(source.get(name), str):
            source[name] = datetime.fromisoformat(source[name].replace("Z", "+00:00"))
    return {**document, "_source": source}


def batch_of(rows: list[dict]) -> pa.RecordBatch:
    table = pa.Table.from_pylist(rows)
    category = pa.dictionary(pa.int32(), pa.string())
    table = table.set_column(table.schema.get_field_index("category"), "category",
                             table.column("category").cast(category))
    return table.to_batches()[0]


def batch_docs(rows: list[dict]) -> list[dict]:
    mapped = set(mapping()["properties"])
    return list(batch_documents(batch_of(rows), "2026-03-08", "run-abc", mapped, "tickets-enriched"))


def test_documents_from_a_batch_are_the_documents_from_its_rows():
    rows = [enriched_row(record_key=f"tickets:{i}", latency_ms=[812.5, math.nan, math.inf][i % 3],
                         updated_at=[None, CREATED][i % 2], amount=Decimal(f"{i}.25")) for i in range(6)]
    assert [as_instants(d) for d in batch_docs(rows)] == [as_instants(d) for d in documents(rows)]


def test_batch_timestamps_are_iso_8601_in_utc():
    [document] = batch_docs([enriched_row()])
    assert document["_source"]["created_at"] == "2026-03-08T09:15:00.000000Z"
    assert document["_source"]["updated_at"] is None


def test_batch_values_are_json_ready():
    [document] = batch_docs([enriched_row(latency_ms=math.nan, total_price=math.inf, raw=b"\xff\xfebytes")])
    source = document["_source"]
    json.dumps(source, allow_nan=False)
    assert source["latency_ms"] is None and source["total_price"] is None
    assert source["category"] == "物流问题"  # dictionary decoded
    assert source["attributes"]["amount"] == 129.9 and source["attributes"]["due_on"] == "2026-03-10"
    assert source["attributes"]["raw"].endswith("bytes")


def test_a_source_column_named_like_a_load_field_cannot_overwrite_it():
    row = enriched_row(dt="1999-01-01", load_id="someone else")
    for document in documents([row]) + batch_docs([row]):
        assert document["_source"]["dt"] == "2026-03-08" and document["_source"]["load_id"] == "run-abc"
        assert document["_source"]["attributes"]["dt"] == "1999-01-01"


def test_the_day_query_selects_the_day_field():
    assert day_query("2026-03-08") == {"term": {"dt": "2026-03-08"}}


# -- what a bulk load reports ----------------------------------------------------------------------


def test_a_document_refused_for_its_content_is_rejected_and_the_load_stays_complete():
    outcome = BulkOutcome(sent=3)
    outcome.record_failure({"index": {"_id": "7", "status": 400, "error": {"type": "document_parsing_exception",
                                                                            "reason": "failed to parse field [x]"}}})
    assert outcome.rejected == {"document_parsing_exception": 1} and not outcome.unavailable
    assert outcome.complete and outcome.indexed == 2
    assert outcome.samples == [{"_id": "7", "status": 400, "type": "document_parsing_exception",
                                "reason": "failed to parse field [x]"}]


def test_documents_still_throttled_after_the_retries_make_the_load_incomplete():
    outcome = BulkOutcome(sent=2)
    outcome.record_failure({"index": {"_id": "1", "status": 429, "error": {"type": "es_rejected_execution_exception"}}})
    assert outcome.unavailable == {"es_rejected_execution_exception": 1} and not outcome.complete


def test_a_whole_request_that_failed_is_the_clusters_fault_whatever_its_status():
    outcome = BulkOutcome(sent=1)
    outcome.record_failure({"index": {"_id": "1", "status": 400, "error": "ApiError(400, 'bad')",
                                      "exception": ValueError()}})
    assert outcome.unavailable == {"request failed (400)": 1} and not outcome.rejected


def test_at_most_five_samples_are_kept():
    outcome = BulkOutcome(sent=9)
    for i in range(9):
        outcome.record_failure({"index": {"_id": str(i), "status": 400, "error": {"type": "mapper_parsing_exception"}}})
    assert len(outcome.samples) == 5 and outcome.rejected == {"mapper_parsing_exception": 9}


def test_a_stopped_worker_makes_the_load_incomplete():
    assert not BulkOutcome(sent=5, error="ConnectionError: refused").complete
