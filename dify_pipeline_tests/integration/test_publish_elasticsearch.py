"""tickets_elasticsearch against the Elasticsearch emulator over real HTTP, with the official client unchanged.

The emulator injects per-item 429 / mapping errors and whole-request 429 / 503, and counts what it receives,
so "retried" and "nothing duplicated" are read from the server's side.
"""

from __future__ import annotations

import datetime
import ipaddress
import threading
import time
import uuid

import dagster as dg
import pytest
import uvicorn
from elastic_transport import TlsError
from elasticsearch import AuthenticationException, Elasticsearch

from dify_pipeline.checks import elasticsearch_matches_parquet
from dify_pipeline.emulators.elasticsearch import ElasticsearchEmulatorConfig, ItemFault, RequestFault
from dify_pipeline.publish.documents import MAPPING_VERSION, index_mapping
from dify_pipeline.publish.elasticsearch_assets import tickets_elasticsearch
from dify_pipeline.publish.parquet_assets import tickets_parquet
from dify_pipeline.resources.elasticsearch import ElasticsearchResource
from dify_pipeline.resources.storage import ObjectStorage
from dify_pipeline.settings import PipelineSettings
from dify_pipeline_tests.integration.conftest import PUBLISH_DAY

OTHER_DAY = "2026-11-19"


@pytest.fixture
def emulator(es_emulator):
    """The session's emulator, data reset; faults set by a test are cleared after it."""
    yield es_emulator
    es_emulator.configure(ElasticsearchEmulatorConfig())


@pytest.fixture
def es(emulator) -> ElasticsearchResource:
    """A fresh alias per test; short backoffs so retries take milliseconds."""
    return ElasticsearchResource(
        url=emulator.url, index=f"tickets_{uuid.uuid4().hex[:8]}", chunk_size=100, parallel_requests=3,
        initial_backoff_seconds=0.01, max_backoff_seconds=0.05,
    )


@pytest.fixture
def output(tmp_path) -> ObjectStorage:
    return ObjectStorage(url=str(tmp_path / "published"))


def variant(es: ElasticsearchResource, changes: dict) -> ElasticsearchResource:
    """The same resource with some settings changed (a new instance: Dagster keeps a resource's original config)."""
    return ElasticsearchResource(**{**es.model_dump(), **changes})


def load(es: ElasticsearchResource, stage: ObjectStorage, output: ObjectStorage, day: str = PUBLISH_DAY):
    """Publish the day's Parquet (the check's reference) and load Elasticsearch, then run the count check."""
    return dg.materialize(
        [tickets_parquet, tickets_elasticsearch, elasticsearch_matches_parquet], partition_key=day,
        raise_on_error=False,
        resources={"stage_storage": stage, "parquet_output": output, "elasticsearch": es, "settings": PipelineSettings()},
    )


def es_metadata(result) -> dict:
    [event] = result.asset_materializations_for_node("tickets_elasticsearch")
    return {key: value.value for key, value in event.metadata.items()}


def failure_metadata(result) -> dict:
    [failure] = [e for e in result.all_events if e.is_step_failure and e.step_key == "tickets_elasticsearch"]
    return {key: value.value for key, value in failure.step_failure_data.user_failure_data.metadata.items()}


def check(result) -> tuple[bool, dict]:
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation.passed, {key: value.value for key, value in evaluation.metadata.items()}


def summaries(emulator, es: ElasticsearchResource, day: str = PUBLISH_DAY) -> dict[str, str]:
    documents = emulator.documents(es.physical_index(MAPPING_VERSION))
    return {doc_id: source["summary"] for doc_id, source in documents.items() if source["dt"] == day}


def indexed_items(emulator) -> dict:
    """Bulk items the server applied, by result: `created` counts first writes, `updated` overwrites."""
    return emulator.stats()["bulk_items"].get("index", {})


# -- a day in the index ----------------------------------------------------------------------------


def test_a_day_is_indexed_by_record_key_into_the_versioned_index_behind_the_alias(
    emulator, es, publish_stage, output, write_enriched_day
):
    write_enriched_day(range(0, 450), tag="a")
    result = load(es, publish_stage, output)
    assert result.success
    metadata = es_metadata(result)
    assert metadata["rows"] == metadata["documents_for_day"] == 450 and metadata["rejected"] == 0
    assert metadata["physical_index"] == f"{es.index}-v{MAPPING_VERSION}"
    assert metadata["alias_targets"] == [metadata["physical_index"]]
    assert check(result)[0]

    client = Elasticsearch(emulator.url)
    document = client.get(index=es.index, id="42")["_source"]  # readers use the alias
    assert document["summary"] == "a: summary of 42" and document["dt"] == PUBLISH_DAY
    assert document["attributes"] == {"id": 42, "customer_tier": "standard"}
    mapping = client.indices.get_mapping(index=es.index)[metadata["physical_index"]]["mappings"]
    assert mapping["dynamic"] == "strict"
    assert mapping["_meta"] == {"dify_pipeline_mapping_version": MAPPING_VERSION}
    assert mapping["properties"]["dt"] == {"type": "date", "format": "yyyy-MM-dd"}
    assert mapping["properties"]["category"] == {"type": "keyword"}
    stats = emulator.stats()
    assert stats["bulk_requests"] >= 5  # 450 documents in requests of at most 100
    assert indexed_items(emulator) == {"created": 450}


def test_requests_are_cut_by_bytes_as_well_as_by_count(emulator, es, publish_stage, output, write_enriched_day):
    write_enriched_day(range(0, 300))
    small = variant(es, {"chunk_size": 1000, "max_chunk_bytes": 20_000})
    assert load(small, publish_stage, output).success
    stats = emulator.stats()
    assert stats["bulk_requests"] >= 300 * 900 // 20_000  # documents are ~900 bytes: many requests
    assert stats["bulk_bytes"] / stats["bulk_requests"] <= 20_000


def test_a_rerun_removes_documents_that_left_the_day_and_leaves_other_days_alone(
    emulator, es, publish_stage, output, write_enriched_day
):
    write_enriched_day(range(0, 100), tag="old")
    assert load(es, publish_stage, output).success
    write_enriched_day(range(1000, 1020), tag="other", day=OTHER_DAY)
    assert load(es, publish_stage, output, OTHER_DAY).success

    write_enriched_day(range(50, 150), tag="new")  # 0-49 left the day, 50-99 changed, 100-149 are new
    result = load(es, publish_stage, output)
    assert result.success
    assert es_metadata(result)["stale_deleted"] == 50
    assert summaries(emulator, es) == {str(k): f"new: summary of {k}" for k in range(50, 150)}
    assert summaries(emulator, es, OTHER_DAY) == {str(k): f"other: summary of {k}" for k in range(1000, 1020)}
    passed, metadata = check(result)
    assert passed and metadata["documents"] == metadata["parquet_rows"] == 100
    assert list(metadata["documents_by_load"].values()) == [100]  # one load, no survivors of the old one


# -- per-item errors and retries -------------------------------------------------------------------


def test_a_document_with_a_mapping_error_is_reported_fails_the_check_and_loses_no_other(
    emulator, es, publish_stage, output, write_enriched_day
):
    emulator.configure(ElasticsearchEmulatorConfig(item_faults=[ItemFault(kind="mapping_error", id_contains="277")]))
    write_enriched_day(range(0, 400))
    result = load(es, publish_stage, output)

    assert result.success  # the asset loaded what it could and says what it could not
    metadata = es_metadata(result)
    assert metadata["rows"] == 399 and metadata["rejected"] == 1
    assert metadata["rejected_by_type"] == {"document_parsing_exception": 1}
    assert [(s["_id"], s["status"]) for s in metadata["failure_samples"]] == [("277", 400)]
    assert set(summaries(emulator, es)) == {str(k) for k in range(400)} - {"277"}
    passed, check_metadata = check(result)
    assert not passed and check_metadata["missing"] == 1


def test_documents_rejected_with_429_are_retried_with_backoff_and_arrive_once(
    emulator, es, publish_stage, output, write_enriched_day
):
    emulator.configure(ElasticsearchEmulatorConfig(item_faults=[ItemFault(kind="rejected_429", every_nth=7, times=2)]))
    write_enriched_day(range(0, 600))
    result = load(es, publish_stage, output)

    assert result.success and check(result)[0]
    assert es_metadata(result)["rows"] == 600 and es_metadata(result)["rejected"] == 0
    assert emulator.stats()["item_faults_injected"] > 0
    applied = indexed_items(emulator)
    assert applied["created"] == 600 and "updated" not in applied  # each document applied exactly once
    assert applied["failed"] == emulator.stats()["item_faults_injected"]  # the refusals, all retried
    assert set(summaries(emulator, es)) == {str(k) for k in range(600)}


def test_whole_requests_refused_with_429_and_503_for_a_while_are_retried_and_nothing_is_duplicated(
    emulator, es, publish_stage, output, write_enriched_day
):
    emulator.configure(ElasticsearchEmulatorConfig(request_faults=[
        RequestFault(status=429, path_contains="_bulk", first_n=6), RequestFault(status=503, path_contains="_bulk", first_n=6),
    ]))
    write_enriched_day(range(0, 500))
    result = load(es, publish_stage, output)

    assert result.success and check(result)[0]
    stats = emulator.stats()
    assert stats["request_faults_injected"] == 12
    assert stats["responses_by_status"]["429"] >= 6 and stats["responses_by_status"]["503"] >= 6
    assert indexed_items(emulator) == {"created": 500}
    assert es_metadata(result)["rows"] == 500


def test_a_cluster_unavailable_beyond_the_retries_fails_the_load_and_keeps_the_previous_documents(
    emulator, es, publish_stage, output, write_enriched_day
):
    write_enriched_day(range(0, 200), tag="old")
    assert load(es, publish_stage, output).success

    emulator.configure(ElasticsearchEmulatorConfig(
        request_faults=[RequestFault(status=503, path_contains="_bulk", first_n=10_000)],
    ))
    write_enriched_day(range(100, 300), tag="new")
    result = load(variant(es, {"max_retries": 1}), publish_stage, output)

    assert not result.success
    metadata = failure_metadata(result)
    assert metadata["not_accepted_after_retries"] == 200 and metadata["rows"] == 0
    assert metadata["failure_samples"][0]["status"] == 503
    assert summaries(emulator, es) == {str(k): f"old: summary of {k}" for k in range(200)}  # nothing deleted
    assert not result.get_asset_check_evaluations()  # the check did not run on a failed load


def test_an_unreadable_shard_stops_the_load_and_deletes_nothing(
    emulator, es, publish_stage, output, write_enriched_day
):
    write_enriched_day(range(0, 1500), tag="old")
    assert load(es, publish_stage, output).success
    write_enriched_day(range(1000, 2500), tag="new")  # 0-999 left the day: deleting them needs a complete load
    broken = publish_stage.list_files(publish_stage.path("enriched_tickets", f"dt={PUBLISH_DAY}"))[1]
    with open(broken, "wb") as handle:
        handle.write(b"PAR1 not a parquet file")

    result = load(es, publish_stage, output)
    assert not result.success
    assert "ArrowInvalid" in failure_metadata(result)["stopped_by"]
    documents = summaries(emulator, es)
    assert {str(k) for k in range(0, 1000)} <= set(documents)  # nothing deleted after an incomplete load
    assert len(documents) == len(set(documents))


# -- security and the alias ------------------------------------------------------------------------


@pytest.mark.parametrize("credentials", ["api_key", "basic"])
def test_api_key_and_basic_auth(emulator, es, publish_stage, output, write_enriched_day, credentials):
    if credentials == "api_key":
        emulator.configure(ElasticsearchEmulatorConfig(api_key="c2VjcmV0LWlkOnNlY3JldC1rZXk="))
        good = variant(es, {"api_key": "c2VjcmV0LWlkOnNlY3JldC1rZXk="})
        bad = variant(es, {"api_key": "d3Jvbmc="})
    else:
        emulator.configure(ElasticsearchEmulatorConfig(basic_auth=("pipeline", "s3cret")))
        good = variant(es, {"username": "pipeline", "password": "s3cret"})
        bad = variant(es, {"username": "pipeline", "password": "wrong"})
    write_enriched_day(range(0, 50))

    assert load(good, publish_stage, output).success
    assert len(summaries(emulator, es)) == 50
    started = time.monotonic()
    with pytest.raises(AuthenticationException):
        bad.ensure_index(bad.client(), index_mapping([], []), MAPPING_VERSION)
    assert time.monotonic() - started < 2  # a wrong credential is not retried


def test_basic_auth_from_the_environment_reaches_the_cluster(emulator, es, publish_stage, output, write_enriched_day,
                                                             monkeypatch):
    """The code location's resources (definitions.build_resources) take basic auth from the environment; the
    password travels as an EnvVar, resolved by Dagster at run time."""
    from dify_pipeline.definitions import build_resources

    emulator.configure(ElasticsearchEmulatorConfig(basic_auth=("pipeline", "env-s3cret")))
    for name, value in {"ELASTICSEARCH_URL": emulator.url, "ELASTICSEARCH_INDEX": es.index,
                        "ELASTICSEARCH_USERNAME": "pipeline", "ELASTICSEARCH_PASSWORD": "env-s3cret"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ELASTICSEARCH_API_KEY", raising=False)
    from_env = build_resources()["elasticsearch"]
    assert isinstance(from_env.password, dg.EnvVar)  # a reference, not the value, in the definitions
    write_enriched_day(range(0, 20))

    assert load(from_env, publish_stage, output).success
    assert len(summaries(emulator, es)) == 20
    monkeypatch.setenv("ELASTICSEARCH_PASSWORD", "wrong")  # read when the run starts, not when the code loaded
    assert not load(from_env, publish_stage, output).success


def test_tls_with_a_private_ca_file(emulator, es, publish_stage, output, write_enriched_day, tmp_path):
    ca_file, cert_file, key_file = _certificates(tmp_path)
    server = uvicorn.Server(uvicorn.Config(emulator.app, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="off", ssl_certfile=cert_file, ssl_keyfile=key_file))
    server.install_signal_handlers = lambda: None
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the TLS emulator did not start"
        time.sleep(0.01)
    url = f"https://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        write_enriched_day(range(0, 30))
        assert load(variant(es, {"url": url, "ca_file": ca_file}), publish_stage, output).success
        assert len(summaries(emulator, es)) == 30
        untrusting = variant(es, {"url": url})
        with pytest.raises(TlsError) as refused:  # the server's certificate is not trusted without the CA file
            untrusting.client().options(max_retries=0).info()
        assert "CERTIFICATE_VERIFY_FAILED" in repr(refused.value.errors) + str(refused.value.__cause__)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_new_mapping_version_is_filled_behind_the_alias_then_swapped_in_one_step(emulator, es):
    client = Elasticsearch(emulator.url)
    mapping = index_mapping(["subject"], [])
    v1 = es.ensure_index(client, mapping, 1)
    client.index(index=es.index, id="a", document={"dt": PUBLISH_DAY, "record_key": "a"}, refresh=True)

    v2 = es.ensure_index(client, {**mapping, "properties": {**mapping["properties"], "new_field": {"type": "keyword"}}}, 2)
    assert (v1, v2) == (f"{es.index}-v1", f"{es.index}-v2")
    assert es.alias_targets(client) == [v1]  # readers stay on the filled index while v2 is loaded
    client.index(index=v2, id="a", document={"dt": PUBLISH_DAY, "record_key": "a", "new_field": "x"}, refresh=True)

    es.swap_alias(client, 2)
    assert es.alias_targets(client) == [v2]
    assert client.get(index=es.index, id="a")["_source"]["new_field"] == "x"
    assert client.indices.get_alias(name=es.index)[v2]["aliases"][es.index]["is_write_index"] is True


def test_a_column_added_to_the_source_is_added_to_the_existing_index(emulator, es):
    client = Elasticsearch(emulator.url)
    physical = es.ensure_index(client, index_mapping(["subject"], []), MAPPING_VERSION)
    es.ensure_index(client, index_mapping(["subject", "title"], ["closed_at"]), MAPPING_VERSION)
    properties = client.indices.get_mapping(index=physical)[physical]["mappings"]["properties"]
    assert properties["title"] == {"type": "text"} and properties["closed_at"] == {"type": "date"}


def _certificates(folder) -> tuple[str, str, str]:
    """A private CA and a certificate it signed for 127.0.0.1: (ca file, certificate file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dify_pipeline test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    certificate = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
                   .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
                   .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return tuple(str(p) for p in paths)
