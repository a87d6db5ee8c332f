"""The Elasticsearch emulator, driven over real HTTP by the official `elasticsearch` client."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from elasticsearch import (
    ApiError,
    AuthenticationException,
    BadRequestError,
    ConflictError,
    Elasticsearch,
    NotFoundError,
    helpers,
)

from dify_pipeline.emulators.elasticsearch import (
    ElasticsearchEmulator,
    ElasticsearchEmulatorConfig,
    ItemFault,
    RequestFault,
)
from dify_pipeline.emulators.server import RunningServer, serve_in_thread

TICKET_MAPPINGS = {
    "dynamic": "strict",
    "properties": {
        "ticket_id": {"type": "keyword"},
        "category": {"type": "keyword"},
        "priority": {"type": "integer"},
        "created_at": {"type": "date"},
        "summary": {"type": "text"},
        "escalated": {"type": "boolean"},
        "customer": {"properties": {"tier": {"type": "keyword"}, "region": {"type": "keyword"}}},
    },
}
CATEGORIES = ["billing", "shipping", "account"]
REJECT_T1_ONCE = ItemFault(kind="rejected_429", id_contains="T-1", times=1)  # T-1, T-10..T-19


def ticket(number: int) -> dict:
    return {
        "ticket_id": f"T-{number}",
        "category": CATEGORIES[number % 3],
        "priority": number % 5,
        "created_at": f"2024-03-{1 + number % 28:02d}T10:00:00+02:00",
        "summary": f"Customer {number} cannot open the Invoice",
        "escalated": number % 4 == 0,
        "customer": {"tier": "gold" if number % 2 else "silver", "region": "eu"},
    }


def ticket_actions(numbers: range, index: str = "tickets") -> Iterator[dict]:
    for number in numbers:
        yield {"_index": index, "_id": f"T-{number}", **ticket(number)}


@pytest.fixture(scope="module")
def emulator() -> ElasticsearchEmulator:
    return ElasticsearchEmulator()


@pytest.fixture(scope="module")
def server(emulator: ElasticsearchEmulator) -> Iterator[RunningServer]:
    with serve_in_thread(emulator.app) as running:
        yield running


@pytest.fixture
def es(emulator: ElasticsearchEmulator, server: RunningServer) -> Iterator[Elasticsearch]:
    emulator.configure(ElasticsearchEmulatorConfig())
    emulator.reset()
    with Elasticsearch(server.url) as client:
        yield client


def create_tickets(es: Elasticsearch, count: int = 30, refresh: bool = True) -> None:
    es.indices.create(index="tickets", mappings=TICKET_MAPPINGS)
    helpers.bulk(es, ticket_actions(range(count)), refresh=refresh)


# ---------------------------------------------------------------- connection


def test_client_connects_and_its_product_check_passes(es: Elasticsearch) -> None:
    info = es.info()
    assert info["version"]["number"] == "9.1.0"
    assert info["tagline"] == "You Know, for Search"
    assert es.ping() is True


def test_responses_carry_product_header_and_the_compatible_media_type(server: RunningServer, es: Elasticsearch) -> None:
    compatible = "application/vnd.elasticsearch+json; compatible-with=9"
    response = httpx.get(server.url, headers={"Accept": compatible})
    assert response.headers["x-elastic-product"] == "Elasticsearch"
    assert response.headers["content-type"] == "application/vnd.elasticsearch+json;compatible-with=9"
    too_old = httpx.get(server.url, headers={"Accept": "application/vnd.elasticsearch+json; compatible-with=7"})
    assert too_old.status_code == 400
    assert too_old.json()["error"]["type"] == "media_type_header_exception"


# ---------------------------------------------------------------- indices and mappings


def test_create_index_with_strict_mapping_and_get_it_back(es: Elasticsearch) -> None:
    es.indices.create(index="tickets", mappings=TICKET_MAPPINGS, settings={"number_of_replicas": 0})
    described = es.indices.get(index="tickets")["tickets"]
    assert described["mappings"] == TICKET_MAPPINGS
    assert described["settings"]["index"]["number_of_replicas"] == "0"
    assert es.indices.get_mapping(index="tickets")["tickets"]["mappings"] == TICKET_MAPPINGS
    assert es.indices.exists(index="tickets")
    assert not es.indices.exists(index="missing")
    with pytest.raises(BadRequestError) as already:
        es.indices.create(index="tickets", mappings=TICKET_MAPPINGS)
    assert already.value.error == "resource_already_exists_exception"
    with pytest.raises(NotFoundError):
        es.indices.get(index="missing")
    with pytest.raises(BadRequestError):  # action.destructive_requires_name, on by default
        es.indices.delete(index="tick*")
    es.indices.delete(index="tickets")
    assert not es.indices.exists(index="tickets")


def test_put_mapping_adds_fields_but_refuses_a_type_change(es: Elasticsearch) -> None:
    es.indices.create(index="tickets", mappings=TICKET_MAPPINGS)
    es.indices.put_mapping(index="tickets", properties={"language": {"type": "keyword"}})
    assert "language" in es.indices.get_mapping(index="tickets")["tickets"]["mappings"]["properties"]
    with pytest.raises(BadRequestError):
        es.indices.put_mapping(index="tickets", properties={"priority": {"type": "keyword"}})


def test_dynamic_mapping_maps_new_fields_like_elasticsearch(es: Elasticsearch) -> None:
    es.index(index="loose", id="1", document={"title": "Hello", "count": 3, "at": "2024-01-01", "ok": True})
    properties = es.indices.get_mapping(index="loose")["loose"]["mappings"]["properties"]
    assert properties["title"] == {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
    assert properties["count"] == {"type": "long"}
    assert properties["at"] == {"type": "date"}
    assert properties["ok"] == {"type": "boolean"}
    with pytest.raises(BadRequestError) as refused:
        es.index(index="loose", id="2", document={"count": "many"})
    assert refused.value.error == "document_parsing_exception"


# ---------------------------------------------------------------- documents and bulk


def test_single_document_crud_with_versions_and_create_conflict(es: Elasticsearch) -> None:
    es.indices.create(index="tickets", mappings=TICKET_MAPPINGS)
    assert es.index(index="tickets", id="T-1", document=ticket(1))["result"] == "created"
    again = es.index(index="tickets", id="T-1", document=ticket(1))
    assert (again["result"], again["_version"]) == ("updated", 2)
    fetched = es.get(index="tickets", id="T-1")
    assert fetched["found"] and fetched["_version"] == 2 and fetched["_source"] == ticket(1)
    with pytest.raises(ConflictError):
        es.create(index="tickets", id="T-1", document=ticket(1))
    es.update(index="tickets", id="T-1", doc={"priority": 4})
    assert es.get(index="tickets", id="T-1", source_includes=["priority"])["_source"] == {"priority": 4}
    assert es.delete(index="tickets", id="T-1")["result"] == "deleted"
    assert not es.exists(index="tickets", id="T-1")
    with pytest.raises(NotFoundError):
        es.get(index="tickets", id="T-1")


def test_bulk_with_ids_then_reindexing_the_same_ids_leaves_the_count_unchanged(
    es: Elasticsearch, emulator: ElasticsearchEmulator
) -> None:
    es.indices.create(index="tickets", mappings=TICKET_MAPPINGS)
    assert helpers.bulk(es, ticket_actions(range(50)), chunk_size=20, refresh=True) == (50, [])
    reindexed = helpers.streaming_bulk(es, ticket_actions(range(50)), refresh=True)
    results = [item["index"]["result"] for ok, item in reindexed]
    assert results == ["updated"] * 50
    assert es.count(index="tickets")["count"] == 50
    assert es.get(index="tickets", id="T-7")["_version"] == 2
    assert emulator.stats()["bulk_items"]["index"] == {"created": 50, "updated": 50}
    assert len(emulator.documents("tickets")) == 50


def test_bulk_update_with_doc_as_upsert_and_delete(es: Elasticsearch) -> None:
    create_tickets(es, count=3)
    actions = [
        {"_op_type": "update", "_index": "tickets", "_id": "T-1", "doc": {"priority": 4}},
        {"_op_type": "update", "_index": "tickets", "_id": "T-9", "doc": ticket(9), "doc_as_upsert": True},
        {"_op_type": "delete", "_index": "tickets", "_id": "T-2"},
    ]
    results = [item for ok, item in helpers.streaming_bulk(es, actions, refresh=True)]
    assert [r.popitem()[1]["result"] for r in results] == ["updated", "created", "deleted"]
    assert sorted(hit["_id"] for hit in es.search(index="tickets")["hits"]["hits"]) == ["T-0", "T-1", "T-9"]


def test_writes_reach_search_and_count_only_after_a_refresh(es: Elasticsearch) -> None:
    create_tickets(es, count=10, refresh=False)
    assert es.count(index="tickets")["count"] == 0
    assert es.search(index="tickets")["hits"]["total"]["value"] == 0
    assert es.get(index="tickets", id="T-3")["found"]  # GET is realtime
    es.indices.refresh(index="tickets")
    assert es.count(index="tickets")["count"] == 10
    es.index(index="tickets", id="T-99", document=ticket(99), refresh="wait_for")
    es.delete(index="tickets", id="T-0")
    assert es.count(index="tickets")["count"] == 11  # the delete is not refreshed yet
    es.indices.refresh()
    assert es.count(index="tickets")["count"] == 10


def test_a_strict_mapping_error_fails_only_its_item_and_is_reported_per_item(es: Elasticsearch) -> None:
    es.indices.create(index="tickets", mappings=TICKET_MAPPINGS)
    actions = list(ticket_actions(range(6)))
    actions[2]["unexpected"] = "field"
    actions[4]["created_at"] = "yesterday-ish"
    outcome = list(helpers.streaming_bulk(es, actions, raise_on_error=False, refresh=True))
    failed = {info["index"]["_id"]: info["index"] for ok, info in outcome if not ok}
    assert set(failed) == {"T-2", "T-4"}
    assert failed["T-2"]["status"] == 400
    assert failed["T-2"]["error"]["type"] == "strict_dynamic_mapping_exception"
    assert failed["T-4"]["error"]["type"] == "document_parsing_exception"
    assert es.count(index="tickets")["count"] == 4
    with pytest.raises(helpers.BulkIndexError):
        helpers.bulk(es, actions)


def test_an_item_rejected_with_429_is_retried_by_streaming_bulk_until_it_succeeds(
    es: Elasticsearch, emulator: ElasticsearchEmulator
) -> None:
    emulator.configure(ElasticsearchEmulatorConfig(item_faults=[REJECT_T1_ONCE]))
    es.indices.create(index="tickets", mappings=TICKET_MAPPINGS)
    # The helper retries item 429s only with raise_on_error=False (elastic/elasticsearch-py#864).
    retried = helpers.streaming_bulk(
        es, ticket_actions(range(12)), max_retries=2, initial_backoff=0.01, raise_on_error=False
    )
    outcome = list(retried)
    assert all(ok for ok, _ in outcome) and len(outcome) == 12
    assert emulator.stats()["item_faults_injected"] == 3  # T-1, T-10, T-11, once each
    assert len(emulator.documents("tickets")) == 12


def test_streaming_bulk_raising_on_error_does_not_retry_item_429s(
    es: Elasticsearch, emulator: ElasticsearchEmulator
) -> None:
    emulator.configure(ElasticsearchEmulatorConfig(item_faults=[REJECT_T1_ONCE]))
    with pytest.raises(helpers.BulkIndexError) as failed:
        list(helpers.streaming_bulk(es, ticket_actions(range(3)), max_retries=2, initial_backoff=0.01))
    assert [error["index"]["status"] for error in failed.value.errors] == [429]


def test_item_faults_fail_the_chosen_items_only(es: Elasticsearch, emulator: ElasticsearchEmulator) -> None:
    faults = [ItemFault(kind="rejected_429", every_nth=3), ItemFault(kind="mapping_error", id_contains="T-4")]
    emulator.configure(ElasticsearchEmulatorConfig(item_faults=faults))
    outcome = list(helpers.streaming_bulk(es, ticket_actions(range(6)), raise_on_error=False))
    statuses = [info["index"]["status"] for ok, info in outcome]
    assert statuses == [201, 201, 429, 201, 400, 429]
    assert outcome[2][1]["index"]["error"]["type"] == "es_rejected_execution_exception"
    assert outcome[4][1]["index"]["error"]["type"] == "document_parsing_exception"


def test_whole_request_429_and_503_are_retried_by_the_client_transport(
    server: RunningServer, es: Elasticsearch, emulator: ElasticsearchEmulator
) -> None:
    # elastic-transport retries 429/502/503/504 itself (max_retries=3 by default, no backoff by default).
    faults = [RequestFault(status=429, first_n=2), RequestFault(status=503, path_contains="_count", first_n=3)]
    emulator.configure(ElasticsearchEmulatorConfig(request_faults=faults))
    assert helpers.bulk(es, ticket_actions(range(5)), refresh=True) == (5, [])
    assert es.count(index="tickets")["count"] == 5
    stats = emulator.stats()
    assert stats["request_faults_injected"] == 5
    assert stats["responses_by_status"] == {"429": 2, "503": 3, "200": 2}


def test_whole_request_faults_beyond_the_transport_retries_raise_api_error(
    server: RunningServer, es: Elasticsearch, emulator: ElasticsearchEmulator
) -> None:
    faults = [RequestFault(status=503, first_n=4), RequestFault(status=429, first_n=1)]
    emulator.configure(ElasticsearchEmulatorConfig(request_faults=faults))
    with pytest.raises(ApiError) as unavailable:
        helpers.bulk(es, ticket_actions(range(5)))
    assert unavailable.value.status_code == 503  # four attempts, all answered 503
    # With transport retries off, the helper's own max_retries retries a whole-request 429.
    with Elasticsearch(server.url, max_retries=0) as no_transport_retries:
        with pytest.raises(ApiError) as rejected:
            helpers.bulk(no_transport_retries, ticket_actions(range(5)))
        assert rejected.value.status_code == 429
        emulator.configure(ElasticsearchEmulatorConfig(request_faults=[RequestFault(status=429, first_n=1)]))
        retried = helpers.streaming_bulk(
            no_transport_retries, ticket_actions(range(5)), max_retries=1, initial_backoff=0.01
        )
        outcome = list(retried)
        assert len(outcome) == 5 and all(ok for ok, _ in outcome)


def test_parallel_bulk_indexes_everything(es: Elasticsearch) -> None:
    es.indices.create(index="tickets", mappings=TICKET_MAPPINGS)
    outcome = list(helpers.parallel_bulk(es, ticket_actions(range(600)), thread_count=4, chunk_size=100))
    assert len(outcome) == 600 and all(ok for ok, _ in outcome)
    es.indices.refresh(index="tickets")
    assert es.count(index="tickets")["count"] == 600


# ---------------------------------------------------------------- search, count, delete_by_query


def test_search_term_range_bool_match_and_terms_aggregation(es: Elasticsearch) -> None:
    create_tickets(es, count=30)
    billing = es.search(index="tickets", query={"term": {"category": "billing"}}, size=100)
    assert {hit["_source"]["category"] for hit in billing["hits"]["hits"]} == {"billing"}
    assert billing["hits"]["total"] == {"value": 10, "relation": "eq"}
    assert es.count(index="tickets", query={"term": {"category": "Billing"}})["count"] == 0  # keyword is exact
    assert es.count(index="tickets", query={"range": {"priority": {"gte": 3}}})["count"] == 12
    in_march = {"range": {"created_at": {"gte": "2024-03-10T00:00:00Z", "lt": "2024-03-20"}}}
    assert es.count(index="tickets", query=in_march)["count"] == 10
    combined = {
        "bool": {
            "filter": [{"term": {"customer.tier": "gold"}}],
            "must_not": [{"term": {"category": "shipping"}}],
            "should": [{"term": {"escalated": True}}, {"range": {"priority": {"lte": 1}}}],
            "minimum_should_match": 1,
        }
    }
    expected = [n for n in range(30) if n % 2 and n % 3 != 1 and (n % 4 == 0 or n % 5 <= 1)]
    found = es.search(index="tickets", query=combined, size=100)["hits"]["hits"]
    assert sorted(hit["_id"] for hit in found) == sorted(f"T-{n}" for n in expected)
    assert es.count(index="tickets", query={"match": {"summary": "INVOICE"}})["count"] == 30
    assert es.count(index="tickets", query={"term": {"summary": "Invoice"}})["count"] == 0  # text is lower-cased
    assert es.count(index="tickets", query={"ids": {"values": ["T-1", "T-2", "nope"]}})["count"] == 2
    assert es.count(index="tickets", query={"terms": {"category": ["billing", "account"]}})["count"] == 20
    aggs = es.search(index="tickets", size=0, aggs={"by_category": {"terms": {"field": "category", "size": 2}}})
    assert aggs["hits"]["hits"] == []
    by_category = aggs["aggregations"]["by_category"]
    assert by_category["buckets"] == [{"key": "account", "doc_count": 10}, {"key": "billing", "doc_count": 10}]
    assert by_category["sum_other_doc_count"] == 10


def test_search_sorts_pages_filters_source_and_caps_total_hits(es: Elasticsearch) -> None:
    create_tickets(es, count=30)
    page = es.search(
        index="tickets",
        sort=[{"priority": "desc"}, {"ticket_id": "asc"}],
        from_=2,
        size=3,
        source=["ticket_id", "customer.tier"],
        track_total_hits=5,
    )
    assert page["hits"]["total"] == {"value": 5, "relation": "gte"}
    assert [hit["_id"] for hit in page["hits"]["hits"]] == ["T-24", "T-29", "T-4"]
    assert page["hits"]["hits"][0]["_source"] == {"ticket_id": "T-24", "customer": {"tier": "silver"}}
    assert page["hits"]["hits"][0]["sort"] == [4, "T-24"]
    with pytest.raises(BadRequestError) as on_text:
        es.search(index="tickets", sort=["summary"])
    assert on_text.value.error == "search_phase_execution_exception"


def test_unknown_query_is_refused_with_bad_request(es: Elasticsearch) -> None:
    create_tickets(es, count=1)
    with pytest.raises(BadRequestError) as refused:
        es.search(index="tickets", query={"fuzzy_magic": {"summary": "x"}})
    assert refused.value.error == "parsing_exception"


def test_scan_reads_every_document_through_scroll(es: Elasticsearch) -> None:
    create_tickets(es, count=25)
    scanned = list(helpers.scan(es, index="tickets", query={"query": {"term": {"category": "billing"}}}, size=4))
    assert sorted(hit["_id"] for hit in scanned) == sorted(f"T-{n}" for n in range(0, 25, 3))


def test_delete_by_query_on_a_term_removes_exactly_those_documents(es: Elasticsearch) -> None:
    create_tickets(es, count=30)
    response = es.delete_by_query(index="tickets", query={"term": {"category": "shipping"}}, refresh=True)
    assert (response["deleted"], response["total"], response["failures"]) == (10, 10, [])
    assert es.count(index="tickets", query={"term": {"category": "shipping"}})["count"] == 0
    assert es.count(index="tickets")["count"] == 20
    assert not es.exists(index="tickets", id="T-1") and es.exists(index="tickets", id="T-2")


def test_delete_by_query_sees_only_refreshed_documents_and_reports_conflicts(es: Elasticsearch) -> None:
    create_tickets(es, count=6)
    helpers.bulk(es, ticket_actions(range(6, 9)))  # not refreshed: invisible to the query
    es.index(index="tickets", id="T-0", document=ticket(0))  # changed since the refresh
    with pytest.raises(ConflictError) as conflict:  # billing: T-0 (changed) and T-3
        es.delete_by_query(index="tickets", query={"term": {"category": "billing"}})
    assert (conflict.value.body["deleted"], conflict.value.body["version_conflicts"]) == (1, 1)
    response = es.delete_by_query(index="tickets", query={"match_all": {}}, conflicts="proceed", refresh=True)
    assert (response["deleted"], response["version_conflicts"]) == (4, 2)  # T-0 changed, T-3 already deleted
    assert sorted(hit["_id"] for hit in es.search(index="tickets")["hits"]["hits"]) == ["T-0", "T-6", "T-7", "T-8"]


# ---------------------------------------------------------------- aliases and templates


def test_aliases_resolve_reads_and_writes_and_change_atomically(es: Elasticsearch) -> None:
    es.indices.create(index="tickets-v1", mappings=TICKET_MAPPINGS, aliases={"tickets": {"is_write_index": True}})
    es.indices.create(index="tickets-v2", mappings=TICKET_MAPPINGS)
    es.index(index="tickets", id="T-1", document=ticket(1), refresh=True)
    assert es.get(index="tickets-v1", id="T-1")["found"]
    es.indices.update_aliases(
        actions=[
            {"remove": {"index": "tickets-v1", "alias": "tickets"}},
            {"add": {"index": "tickets-v2", "alias": "tickets", "is_write_index": True}},
        ]
    )
    expected_alias = {"tickets-v2": {"aliases": {"tickets": {"is_write_index": True}}}}
    assert es.indices.get_alias(name="tickets").body == expected_alias
    es.index(index="tickets", id="T-2", document=ticket(2), refresh=True)
    assert es.count(index="tickets")["count"] == 1
    with pytest.raises(NotFoundError):  # one bad action: nothing applied
        es.indices.update_aliases(
            actions=[{"add": {"index": "tickets-v1", "alias": "all"}}, {"add": {"index": "nope", "alias": "all"}}]
        )
    assert not es.indices.exists_alias(name="all")
    es.indices.put_alias(index="tickets-v1", name="all")
    es.indices.put_alias(index="tickets-v2", name="all")
    assert es.indices.exists_alias(name="all")
    assert es.count(index="all")["count"] == 2
    with pytest.raises(BadRequestError):  # two indices, no write index
        es.index(index="all", id="T-3", document=ticket(3))


def test_an_index_template_shapes_an_index_auto_created_by_a_write(es: Elasticsearch) -> None:
    es.indices.put_index_template(
        name="tickets",
        index_patterns=["tickets-*"],
        priority=10,
        template={"mappings": TICKET_MAPPINGS, "aliases": {"tickets-all": {}}},
    )
    assert es.indices.exists_index_template(name="tickets")
    assert es.indices.get_index_template(name="tickets")["index_templates"][0]["name"] == "tickets"
    with_extra_field = [{**action, "extra": 1} for action in ticket_actions(range(2), "tickets-2024")]
    outcome = list(helpers.streaming_bulk(es, with_extra_field, raise_on_error=False))
    assert [info["index"]["error"]["type"] for _, info in outcome] == ["strict_dynamic_mapping_exception"] * 2
    assert es.indices.get_mapping(index="tickets-2024")["tickets-2024"]["mappings"] == TICKET_MAPPINGS
    assert "tickets-all" in es.indices.get_alias(index="tickets-2024")["tickets-2024"]["aliases"]
    es.indices.delete_index_template(name="tickets")
    with pytest.raises(NotFoundError):
        es.indices.get_index_template(name="tickets")


# ---------------------------------------------------------------- authentication and control


def test_api_key_is_required_when_configured(
    server: RunningServer, emulator: ElasticsearchEmulator, es: Elasticsearch
) -> None:
    emulator.configure(ElasticsearchEmulatorConfig(api_key="c2VjcmV0OmtleQ=="))
    with pytest.raises(AuthenticationException) as refused:
        es.info()
    assert refused.value.error == "security_exception"
    assert httpx.get(server.url).headers["www-authenticate"] == "ApiKey"
    with Elasticsearch(server.url, api_key=("secret", "key")) as authorised:  # base64("secret:key")
        assert authorised.info()["version"]["number"] == "9.1.0"
    with Elasticsearch(server.url, api_key="wrong") as wrong:
        with pytest.raises(AuthenticationException):
            wrong.info()


def test_basic_auth_is_required_when_configured(
    server: RunningServer, emulator: ElasticsearchEmulator, es: Elasticsearch
) -> None:
    emulator.configure(ElasticsearchEmulatorConfig(basic_auth=("elastic", "changeme")))
    with pytest.raises(AuthenticationException):
        es.count(index="tickets")
    with Elasticsearch(server.url, basic_auth=("elastic", "changeme")) as authorised:
        assert authorised.ping()
    with Elasticsearch(server.url, basic_auth=("elastic", "wrong")) as wrong:
        with pytest.raises(AuthenticationException) as refused:
            wrong.info()
        assert "unable to authenticate user [elastic]" in str(refused.value.body)


def test_control_api_configures_counts_and_resets_over_http(server: RunningServer, es: Elasticsearch) -> None:
    config = {"request_faults": [{"status": 503, "path_contains": "_search", "first_n": 1}]}
    assert httpx.post(f"{server.url}/_emulator/config", json=config).json() == {"acknowledged": True}
    create_tickets(es, count=3)
    assert httpx.get(f"{server.url}/_search").status_code == 503
    stats = httpx.get(f"{server.url}/_emulator/stats").json()
    assert stats["request_faults_injected"] == 1
    assert stats["requests"]["PUT /_bulk"] == 1
    assert stats["bulk_items"] == {"index": {"created": 3}}
    assert stats["bulk_bytes"] > 0
    httpx.post(f"{server.url}/_emulator/reset")
    assert not es.indices.exists(index="tickets")


def test_unknown_endpoint_and_wrong_method_answer_like_elasticsearch(server: RunningServer, es: Elasticsearch) -> None:
    assert httpx.get(f"{server.url}/_nope/nothing").status_code == 400
    assert httpx.patch(f"{server.url}/tickets").status_code == 405


def test_runs_as_a_program_and_prints_its_url() -> None:
    program = subprocess.Popen(
        [sys.executable, "-m", "dify_pipeline.emulators.elasticsearch", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = program.stdout.readline().strip()  # type: ignore[union-attr]
        assert line.startswith("ELASTICSEARCH_EMULATOR_URL=http://127.0.0.1:")
        with Elasticsearch(line.partition("=")[2]) as client:
            deadline = time.monotonic() + 10
            while not client.ping() and time.monotonic() < deadline:  # the URL is printed before it listens
                time.sleep(0.05)
            assert client.info()["tagline"] == "You Know, for Search"
    finally:
        program.terminate()
        program.wait(timeout=10)
