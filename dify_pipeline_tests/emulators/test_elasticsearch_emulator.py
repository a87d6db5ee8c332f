"""The Elasticsearch emulator, driven over real HTTP by the official `elasticsearch` client."""

from __future__ import annotations

import gc
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime

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

from dify_pipeline_dev.emulators import elasticsearch as elasticsearch_emulator
from dify_pipeline_dev.emulators import elasticsearch_query
from dify_pipeline_dev.emulators.elasticsearch import (
    FLAVOURS,
    ElasticsearchEmulator,
    ElasticsearchEmulatorConfig,
    ItemFault,
    RequestFault,
    SigV4Credentials,
)
from dify_pipeline_dev.emulators.server import RunningServer, serve_in_thread

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
    assert info["version"]["number"] == "9.1.4"
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


def compatible(major: int, ndjson: bool = False) -> str:
    return f"application/vnd.elasticsearch+{'x-ndjson' if ndjson else 'json'}; compatible-with={major}"


def test_an_elasticsearch_8_node_refuses_the_9_client_with_the_real_error_and_accepts_compatible_with_8(
    server: RunningServer, emulator: ElasticsearchEmulator
) -> None:
    emulator.configure(ElasticsearchEmulatorConfig(**FLAVOURS["elasticsearch-8"]))
    json_9 = {"Accept": compatible(9), "Content-Type": compatible(9)}  # what elasticsearch-py 9 sends
    refused = httpx.put(f"{server.url}/tickets", headers=json_9, json={"mappings": TICKET_MAPPINGS})
    assert refused.status_code == 400
    assert refused.json() == {
        "error": {
            "root_cause": [{"type": "media_type_header_exception",
                            "reason": "Invalid media-type value on headers [Accept, Content-Type]"}],
            "type": "media_type_header_exception",
            "reason": "Invalid media-type value on headers [Accept, Content-Type]",
            "caused_by": {"type": "status_exception", "reason": "Accept version must be either version 8 or 7, but "
                          "found 9. Accept=application/vnd.elasticsearch+json; compatible-with=9"},
        },
        "status": 400,
    }
    head = httpx.head(f"{server.url}/tickets", headers=json_9)  # a HEAD answer has no body: a client can only say 400
    assert (head.status_code, head.content) == (400, b"")
    json_8 = {"Accept": compatible(8), "Content-Type": compatible(8)}
    created = httpx.put(f"{server.url}/tickets", headers=json_8, json={"mappings": TICKET_MAPPINGS})
    assert created.status_code == 200
    assert created.headers["content-type"] == "application/vnd.elasticsearch+json;compatible-with=8"
    assert httpx.get(server.url, headers={"Accept": "application/json"}).json()["version"]["number"].startswith("8.")
    mixed = httpx.post(f"{server.url}/tickets/_count", headers={"Accept": compatible(8), "Content-Type": compatible(7)},
                       json={"query": {"match_all": {}}})
    assert mixed.status_code == 400
    assert mixed.json()["error"]["caused_by"]["reason"].startswith(
        "A compatible version is required on both Content-Type and Accept headers if either one has requested a "
        "compatible version and the compatible versions must match.")
    half = httpx.post(f"{server.url}/tickets/_count", headers={"Accept": compatible(8)}, json={})
    assert half.status_code == 400 and "either one has requested a compatible version." in half.text


def test_an_elasticsearch_9_node_accepts_compatible_with_8_and_9_but_not_7(
    server: RunningServer, es: Elasticsearch
) -> None:
    for major in (8, 9):
        answer = httpx.post(f"{server.url}/_bulk", headers={"Accept": compatible(major),
                            "Content-Type": compatible(major, ndjson=True)}, content=b'{"index":{"_index":"t"}}\n{}\n')
        assert answer.status_code == 200 and answer.headers["x-elastic-product"] == "Elasticsearch"
    too_old = httpx.get(server.url, headers={"Accept": compatible(7)})
    assert too_old.status_code == 400
    assert too_old.json()["error"]["caused_by"]["reason"] == (
        "Accept version must be either version 9 or 8, but found 7. Accept=" + compatible(7))
    plain_text = httpx.post(f"{server.url}/t/_count", headers={"Content-Type": "text/plain"}, content=b"{}")
    assert (plain_text.status_code, plain_text.json()) == (
        406, {"error": "Content-Type header [text/plain] is not supported", "status": 406})


def test_an_opensearch_node_is_not_elasticsearch_to_either_client(
    server: RunningServer, emulator: ElasticsearchEmulator, es: Elasticsearch
) -> None:
    from opensearchpy import OpenSearch

    emulator.configure(ElasticsearchEmulatorConfig(**FLAVOURS["opensearch"]))
    info = httpx.get(server.url)
    assert "x-elastic-product" not in info.headers
    assert info.json()["version"]["distribution"] == "opensearch"
    assert info.json()["tagline"] == "The OpenSearch Project: https://opensearch.org/"
    vendor = httpx.put(f"{server.url}/tickets", headers={"Content-Type": compatible(9)}, json={})
    assert (vendor.status_code, vendor.json()) == (
        406, {"error": f"Content-Type header [{compatible(9)}] is not supported", "status": 406})
    from elasticsearch import UnsupportedProductError

    with pytest.raises(UnsupportedProductError):  # the official client checks the product on its first answer
        es.info()
    with OpenSearch(server.url) as client:
        client.indices.create(index="tickets", body={"mappings": TICKET_MAPPINGS})
        client.bulk(body=[{"index": {"_index": "tickets", "_id": "T-1"}}, ticket(1)], refresh=True)
        assert client.count(index="tickets", body={"query": {"term": {"category": "shipping"}}})["count"] == 1


def test_amazon_opensearch_service_accepts_only_requests_signed_with_the_known_credentials(
    server: RunningServer, emulator: ElasticsearchEmulator, es: Elasticsearch
) -> None:
    from botocore.credentials import Credentials
    from opensearchpy import OpenSearch, Urllib3AWSV4SignerAuth
    from opensearchpy.exceptions import AuthorizationException

    known = SigV4Credentials(access_key="AKIDEXAMPLE", secret_key="wJalrXUtnFEMI/K7MDENG", region="eu-west-1")
    emulator.configure(ElasticsearchEmulatorConfig(**FLAVOURS["opensearch"], sigv4=known))

    def client(access_key: str = known.access_key, secret_key: str = known.secret_key, region: str = "eu-west-1"):
        signer = Urllib3AWSV4SignerAuth(Credentials(access_key, secret_key), region, "es")
        return OpenSearch(server.url, http_auth=signer)

    with client() as signed:
        signed.indices.create(index="tickets", body={"mappings": TICKET_MAPPINGS})
        signed.bulk(body=[{"index": {"_index": "tickets", "_id": "T-1"}}, ticket(1)], params={"refresh": "true"})
        assert signed.count(index="tickets")["count"] == 1
    refusals = {
        "anonymous": (OpenSearch(server.url), "User: anonymous is not authorized to perform: es:ESHttpPost because "
                      "no resource-based policy allows the es:ESHttpPost action"),
        "wrong secret": (client(secret_key="guess"), "The request signature we calculated does not match"),
        "unknown key": (client(access_key="AKIDOTHER"), "The security token included in the request is invalid."),
        "other region": (client(region="us-east-1"), "Credential should be scoped to a valid region, not 'us-east-1'."),
    }
    for name, (wrong, message) in refusals.items():
        with pytest.raises(AuthorizationException) as refused:
            wrong.count(index="tickets")
        assert refused.value.status_code == 403 and message in str(refused.value.info), name
    tampered = httpx.post(f"{server.url}/tickets/_count", content=b'{"query":{"match_all":{}}}',
                          headers={**_signed_headers(known, server.url + "/tickets/_count", b"{}"),
                                   "Content-Type": "application/json"})
    assert tampered.status_code == 403  # a body other than the one signed


def _signed_headers(known: SigV4Credentials, url: str, body: bytes) -> dict:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(known.access_key, known.secret_key), "es", known.region).add_auth(request)
    return dict(request.headers.items())


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
    current = fetched
    with pytest.raises(ConflictError):  # a conditional write over a version that is no longer there
        es.index(index="tickets", id="T-1", document=ticket(1), if_seq_no=current["_seq_no"] - 1, if_primary_term=1)
    replaced = es.index(index="tickets", id="T-1", document=ticket(1), if_seq_no=current["_seq_no"], if_primary_term=1)
    with pytest.raises(ConflictError):
        es.delete(index="tickets", id="T-1", if_seq_no=current["_seq_no"], if_primary_term=1)
    assert es.delete(index="tickets", id="T-1", if_seq_no=replaced["_seq_no"], if_primary_term=1)["result"] == "deleted"
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


def test_counting_a_day_reads_each_distinct_date_once_not_once_per_document(
    es: Elasticsearch, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The step counts its day over every document twice; parsing the same date per document made a count of a
    # million documents outlast the client's 60 s timeout.
    parsed: list[str] = []

    class CountingDatetime(datetime):
        @classmethod
        def fromisoformat(cls, text: str) -> datetime:
            parsed.append(text)
            return datetime.fromisoformat(text)

    monkeypatch.setattr(elasticsearch_query, "datetime", CountingDatetime)
    es.indices.create(index="tickets", mappings=TICKET_MAPPINGS)
    day = "2031-07-04T10:00:00+02:00"  # a date no other test indexes: nothing remembered from them
    helpers.bulk(es, ({**action, "created_at": day} for action in ticket_actions(range(300))), refresh=True)
    assert es.count(index="tickets", query={"term": {"created_at": day}})["count"] == 300
    assert es.count(index="tickets", query={"term": {"created_at": "2031-07-04T08:00:00Z"}})["count"] == 300
    assert len(parsed) <= 3


def test_documents_stored_by_bulk_loads_leave_the_garbage_collectors_scans(
    es: Elasticsearch, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A million stored documents are tens of millions of objects: every full collection during a count or a
    # search walked them all, and the day's count check outlasted the client's timeout.
    monkeypatch.setattr(elasticsearch_emulator, "FREEZE_AFTER_DOCUMENTS", 40)
    frozen_before = gc.get_freeze_count()
    create_tickets(es, count=50)
    assert gc.get_freeze_count() > frozen_before
    assert es.count(index="tickets")["count"] == 50


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


def test_search_term_terms_bool_and_terms_aggregation(es: Elasticsearch) -> None:
    create_tickets(es, count=30)
    billing = es.search(index="tickets", query={"term": {"category": "billing"}}, size=100)
    assert {hit["_source"]["category"] for hit in billing["hits"]["hits"]} == {"billing"}
    assert billing["hits"]["total"] == {"value": 10, "relation": "eq"}
    assert es.count(index="tickets", query={"term": {"category": "Billing"}})["count"] == 0  # keyword is exact
    assert es.count(index="tickets", query={"term": {"created_at": "2024-03-02T08:00:00Z"}})["count"] == 2  # instants
    combined = {
        "bool": {
            "filter": [{"term": {"customer.tier": "gold"}}],
            "must_not": [{"term": {"category": "shipping"}}],
            "should": [{"term": {"escalated": True}}, {"terms": {"priority": [0, 1]}}],
            "minimum_should_match": 1,
        }
    }
    expected = [n for n in range(30) if n % 2 and n % 3 != 1 and (n % 4 == 0 or n % 5 <= 1)]
    found = es.search(index="tickets", query=combined, size=100)["hits"]["hits"]
    assert sorted(hit["_id"] for hit in found) == sorted(f"T-{n}" for n in expected)
    assert es.count(index="tickets", query={"term": {"summary": "invoice"}})["count"] == 30  # one lower-cased token
    assert es.count(index="tickets", query={"term": {"summary": "Invoice"}})["count"] == 0
    assert es.count(index="tickets", query={"terms": {"category": ["billing", "account"]}})["count"] == 20
    aggs = es.search(index="tickets", size=0, aggs={"by_category": {"terms": {"field": "category", "size": 2}}})
    assert aggs["hits"]["hits"] == []
    by_category = aggs["aggregations"]["by_category"]
    assert by_category["buckets"] == [{"key": "account", "doc_count": 10}, {"key": "billing", "doc_count": 10}]
    assert by_category["sum_other_doc_count"] == 10


def test_unknown_query_is_refused_with_bad_request(es: Elasticsearch) -> None:
    create_tickets(es, count=1)
    with pytest.raises(BadRequestError) as refused:
        es.search(index="tickets", query={"fuzzy_magic": {"summary": "x"}})
    assert refused.value.error == "parsing_exception"
    with pytest.raises(BadRequestError):  # what the pipeline never sends is refused, not answered wrongly
        es.search(index="tickets", query={"match": {"summary": "x"}}, sort=["ticket_id"])


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
    hits = es.search(index="tickets", size=20)["hits"]["hits"]
    assert sorted(hit["_id"] for hit in hits) == ["T-0", "T-6", "T-7", "T-8"]


# ---------------------------------------------------------------- aliases


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
        assert authorised.info()["version"]["number"] == "9.1.4"
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
        [sys.executable, "-m", "dify_pipeline_dev.emulators.elasticsearch", "--port", "0"],
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
