"""tickets_elasticsearch against the search emulator over real HTTP, as Elasticsearch 8, Elasticsearch 9 and
OpenSearch, with the official clients unchanged (elasticsearch-py for the first two, opensearch-py).

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
import httpx
import pytest
import uvicorn

from dify_pipeline.contract import TICKET_OUTPUTS
from dify_pipeline.publish.documents import MAPPING_VERSION, index_mapping
from dify_pipeline.resources.search import SearchCluster, SearchClusterError
from dify_pipeline.resources.storage import ObjectStorage
from dify_pipeline_dev.emulators.elasticsearch import (
    FLAVOURS,
    ElasticsearchEmulatorConfig,
    ItemFault,
    RequestFault,
    SigV4Credentials,
)
from dify_pipeline_tests.integration.conftest import PUBLISH_DAY
from dify_pipeline_tests.integration.pipeline import ticket_steps

OTHER_DAY = "2026-11-19"
tickets_parquet, tickets_elasticsearch, elasticsearch_matches_parquet = (
    ticket_steps()[name] for name in ("tickets_parquet", "tickets_elasticsearch", "elasticsearch_matches_parquet"))


@pytest.fixture(params=sorted(FLAVOURS))
def flavour(request) -> str:
    return request.param


@pytest.fixture
def emulator(es_emulator, flavour):
    """The session's emulator speaking as `flavour`, data reset; what a test configures is undone after it."""
    es_emulator.flavour = FLAVOURS[flavour]
    es_emulator.configure(ElasticsearchEmulatorConfig(**es_emulator.flavour))
    yield es_emulator
    es_emulator.configure(ElasticsearchEmulatorConfig())


def configure(emulator, **settings) -> None:
    """The emulator as its flavour, with faults or credentials."""
    emulator.configure(ElasticsearchEmulatorConfig(**emulator.flavour, **settings))


@pytest.fixture
def es(emulator) -> SearchCluster:
    """A fresh alias per test; short backoffs so retries take milliseconds."""
    return SearchCluster(
        url=emulator.url, engine=emulator.flavour["product"], index=f"tickets_{uuid.uuid4().hex[:8]}",
        chunk_size=100, parallel_requests=3, initial_backoff_seconds=0.01, max_backoff_seconds=0.05,
    )


@pytest.fixture
def output(tmp_path) -> ObjectStorage:
    return ObjectStorage(url=str(tmp_path / "published"))


def variant(es: SearchCluster, changes: dict) -> SearchCluster:
    """The same resource with some settings changed (a new instance: Dagster keeps a resource's original config)."""
    return SearchCluster(**{**es.model_dump(), **changes})


def load(es: SearchCluster, stage: ObjectStorage, output: ObjectStorage, day: str = PUBLISH_DAY):
    """Publish the day's Parquet (the check's reference) and load the index, then run the count check."""
    return dg.materialize(
        [tickets_parquet, tickets_elasticsearch, elasticsearch_matches_parquet], partition_key=day,
        raise_on_error=False,
        resources={"stage_storage": stage, "parquet_output": output, "elasticsearch": es},
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


def summaries(emulator, es: SearchCluster, day: str = PUBLISH_DAY) -> dict[str, str]:
    documents = emulator.documents(es.physical_index(MAPPING_VERSION))
    return {doc_id: source["summary"] for doc_id, source in documents.items() if source["dt"] == day}


def indexed_items(emulator) -> dict:
    """Bulk items the server applied, by result: `created` counts first writes, `updated` overwrites."""
    return emulator.stats()["bulk_items"].get("index", {})


def read(emulator, path: str) -> dict:
    """A GET on the emulator in plain JSON, which every flavour answers."""
    return httpx.get(f"{emulator.url}{path}", headers={"Accept": "application/json"}).json()


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
    assert metadata["cluster"] == f"{emulator.flavour['product']} {emulator.flavour['version']}"

    document = read(emulator, f"/{es.index}/_doc/42")["_source"]  # readers use the alias
    assert document["summary"] == "a: summary of 42" and document["dt"] == PUBLISH_DAY
    assert document["attributes"] == {"id": 42, "customer_tier": "standard"}
    mapping = read(emulator, f"/{es.index}/_mapping")[metadata["physical_index"]]["mappings"]
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


def test_an_emptied_day_leaves_no_documents_and_a_shrunk_day_only_its_records(
    emulator, es, publish_stage, output, write_enriched_day
):
    write_enriched_day(range(0, 300), tag="full")
    assert load(es, publish_stage, output).success
    write_enriched_day(range(1000, 1010), tag="other", day=OTHER_DAY)
    assert load(es, publish_stage, output, OTHER_DAY).success

    write_enriched_day(range(0, 40), tag="shrunk")
    shrunk = load(es, publish_stage, output)
    assert shrunk.success and es_metadata(shrunk)["stale_deleted"] == 260
    assert summaries(emulator, es) == {str(k): f"shrunk: summary of {k}" for k in range(40)}

    write_enriched_day([], tag="empty")  # the stage holds one empty shard: the source has no row for the day
    emptied = load(es, publish_stage, output)
    assert emptied.success and check(emptied)[0]
    metadata = es_metadata(emptied)
    assert (metadata["rows"], metadata["stale_deleted"], metadata["documents_for_day"]) == (0, 40, 0)
    assert summaries(emulator, es) == {}
    assert len(summaries(emulator, es, OTHER_DAY)) == 10  # another day is left alone


# -- per-item errors and retries -------------------------------------------------------------------


def test_a_document_with_a_mapping_error_is_reported_fails_the_blocking_check_and_loses_no_other(
    emulator, es, publish_stage, output, write_enriched_day
):
    configure(emulator, item_faults=[ItemFault(kind="mapping_error", id_contains="277")])
    write_enriched_day(range(0, 400))
    result = load(es, publish_stage, output)

    assert not result.success  # the blocking check fails the run, in red
    metadata = es_metadata(result)  # the asset loaded what it could and says what it could not
    assert metadata["rows"] == 399 and metadata["rejected"] == 1
    assert metadata["rejected_by_type"] == {"document_parsing_exception": 1}
    assert [(s["_id"], s["status"]) for s in metadata["failure_samples"]] == [("277", 400)]
    assert set(summaries(emulator, es)) == {str(k) for k in range(400)} - {"277"}
    passed, check_metadata = check(result)
    assert not passed and check_metadata["missing"] == 1


def test_documents_rejected_with_429_are_retried_with_backoff_and_arrive_once(
    emulator, es, publish_stage, output, write_enriched_day
):
    configure(emulator, item_faults=[ItemFault(kind="rejected_429", every_nth=7, times=2)])
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
    # Each request is tried 4 times by the client (3 retries), then a 429 again by the bulk helper, with backoff.
    configure(emulator, request_faults=[RequestFault(status=503, path_contains="_bulk", first_n=3),
                                        RequestFault(status=429, path_contains="_bulk", first_n=9)])
    write_enriched_day(range(0, 500))
    result = load(es, publish_stage, output)

    assert result.success and check(result)[0]
    stats = emulator.stats()
    assert stats["request_faults_injected"] == 12
    assert stats["responses_by_status"]["429"] == 9 and stats["responses_by_status"]["503"] == 3
    assert indexed_items(emulator) == {"created": 500}
    assert es_metadata(result)["rows"] == 500


def test_a_cluster_unavailable_beyond_the_retries_fails_the_load_and_keeps_the_previous_documents(
    emulator, es, publish_stage, output, write_enriched_day
):
    write_enriched_day(range(0, 200), tag="old")
    assert load(es, publish_stage, output).success

    configure(emulator, request_faults=[RequestFault(status=503, path_contains="_bulk", first_n=10_000)])
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


def test_basic_auth(emulator, es, publish_stage, output, write_enriched_day):
    configure(emulator, basic_auth=("pipeline", "s3cret"))
    write_enriched_day(range(0, 50))

    assert load(variant(es, {"username": "pipeline", "password": "s3cret"}), publish_stage, output).success
    assert len(summaries(emulator, es)) == 50
    started = time.monotonic()
    with pytest.raises(SearchClusterError, match="refused the credentials .* ELASTICSEARCH_USERNAME/"):
        variant(es, {"username": "pipeline", "password": "wrong"}).connect()
    assert time.monotonic() - started < 2  # a wrong credential is not retried


def test_an_api_key_on_elasticsearch(emulator, es, publish_stage, output, write_enriched_day, flavour):
    if emulator.flavour["product"] == "opensearch":
        with pytest.raises(SearchClusterError, match="ELASTICSEARCH_API_KEY is for Elasticsearch"):
            variant(es, {"api_key": "c2VjcmV0LWlkOnNlY3JldC1rZXk="}).connect()
        return
    configure(emulator, api_key="c2VjcmV0LWlkOnNlY3JldC1rZXk=")
    write_enriched_day(range(0, 50))
    assert load(variant(es, {"api_key": "c2VjcmV0LWlkOnNlY3JldC1rZXk="}), publish_stage, output).success
    assert len(summaries(emulator, es)) == 50
    with pytest.raises(SearchClusterError, match="refused the credentials .* ELASTICSEARCH_API_KEY"):
        variant(es, {"api_key": "d3Jvbmc="}).connect()


@pytest.mark.parametrize("flavour", ["opensearch"])
def test_amazon_opensearch_service_is_reached_with_sigv4_from_the_aws_credential_chain(
    emulator, es, publish_stage, output, write_enriched_day, monkeypatch
):
    """Every request signed (the emulator recomputes each signature); the credentials come from the standard AWS
    variables, as on a machine with a role they come from the instance."""
    known = SigV4Credentials(access_key="AKIDPIPELINE", secret_key="pipeline-secret", region="eu-central-1")
    configure(emulator, sigv4=known)
    for name, value in {"AWS_ACCESS_KEY_ID": known.access_key, "AWS_SECRET_ACCESS_KEY": known.secret_key,
                        "AWS_REGION": "eu-central-1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    write_enriched_day(range(0, 120))

    signed = variant(es, {"aws_sigv4": True})
    result = load(signed, publish_stage, output)
    assert result.success and check(result)[0]
    assert len(summaries(emulator, es)) == 120
    assert emulator.stats()["responses_by_status"].keys() <= {"200", "201", "404"}
    with pytest.raises(SearchClusterError, match="refused the credentials .* AWS"):
        variant(es, {"aws_sigv4": True, "aws_region": "us-west-2"}).connect()  # a signature for another region
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "stolen-or-stale")
    with pytest.raises(SearchClusterError, match="refused the credentials"):
        signed.connect()
    with pytest.raises(SearchClusterError, match="refused the credentials"):  # unsigned
        es.connect()


def test_basic_auth_from_the_environment_reaches_the_cluster(emulator, es, publish_stage, output, write_enriched_day,
                                                             monkeypatch):
    """The code location's resources (definitions.build_resources) take the engine and basic auth from the
    environment; the password travels as an EnvVar, resolved by Dagster at run time."""
    from dify_pipeline.definitions import build_resources

    configure(emulator, basic_auth=("pipeline", "env-s3cret"))
    for name, value in {"ELASTICSEARCH_URL": emulator.url, "ELASTICSEARCH_INDEX": es.index,
                        "SEARCH_ENGINE": emulator.flavour["product"],
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
        with pytest.raises(SearchClusterError, match="cannot be reached") as refused:  # no CA file: not trusted
            untrusting.connect()
        assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_new_mapping_version_is_filled_behind_the_alias_then_swapped_in_one_step(emulator, es):
    with es.connect() as sink:
        mapping = index_mapping(["subject"], [], TICKET_OUTPUTS)
        v1 = sink.ensure_index(mapping, 1)
        sink.create_document(es.index, "a", {"dt": PUBLISH_DAY, "record_key": "a"})

        grown = {**mapping, "properties": {**mapping["properties"], "new_field": {"type": "keyword"}}}
        v2 = sink.ensure_index(grown, 2)
        assert (v1, v2) == (f"{es.index}-v1", f"{es.index}-v2")
        assert sink.alias_targets() == [v1]  # readers stay on the filled index while v2 is loaded
        sink.create_document(v2, "a", {"dt": PUBLISH_DAY, "record_key": "a", "new_field": "x"})

        sink.swap_alias(2)
        assert sink.alias_targets() == [v2]
        assert sink.read_document(es.index, "a")[0]["new_field"] == "x"
    assert read(emulator, f"/_alias/{es.index}")[v2]["aliases"][es.index]["is_write_index"] is True


def test_a_column_added_to_the_source_is_added_to_the_existing_index(emulator, es):
    with es.connect() as sink:
        physical = sink.ensure_index(index_mapping(["subject"], [], TICKET_OUTPUTS), MAPPING_VERSION)
        sink.ensure_index(index_mapping(["subject", "title"], ["closed_at"], TICKET_OUTPUTS), MAPPING_VERSION)
    properties = read(emulator, f"/{physical}/_mapping")[physical]["mappings"]["properties"]
    assert properties["title"] == {"type": "text"} and properties["closed_at"] == {"type": "date"}


def _certificates(folder) -> tuple[str, str, str]:
    """A private CA and a certificate it signed for 127.0.0.1: (ca file, certificate file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dify_pipeline test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    certificate = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
                   .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                  critical=False)
                   .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return tuple(str(p) for p in paths)
