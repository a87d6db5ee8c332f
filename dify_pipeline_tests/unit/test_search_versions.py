"""Which clusters the sink publishes to, what it asks each for, and when a day's lease may be taken."""

import pytest

from dify_pipeline.resources.search.lease import lease_index, may_take
from dify_pipeline.resources.search.versions import (
    ClusterInfo,
    UnsupportedCluster,
    check_supported,
    compatible_with,
    identify,
)

OPENSEARCH_INFO = {"version": {"distribution": "opensearch", "number": "2.19.3"}, "tagline": "The OpenSearch Project"}
ELASTIC_INFO = {"version": {"number": "8.19.4", "build_flavor": "default"}, "tagline": "You Know, for Search"}


def test_the_product_is_read_from_the_distribution_or_the_elastic_product_header():
    assert identify(OPENSEARCH_INFO, None) == ClusterInfo("opensearch", "2.19.3")
    assert identify(ELASTIC_INFO, "Elasticsearch") == ClusterInfo("elasticsearch", "8.19.4")
    with pytest.raises(UnsupportedCluster, match="ELASTICSEARCH_URL answers as neither Elasticsearch nor OpenSearch"):
        identify(ELASTIC_INFO, None)  # a proxy or a fork that does not say what it is


@pytest.mark.parametrize("cluster", [ClusterInfo("elasticsearch", "8.0.1"), ClusterInfo("elasticsearch", "9.1.4")])
def test_elasticsearch_8_and_9_are_supported(cluster):
    check_supported(cluster, "elasticsearch")


@pytest.mark.parametrize("cluster", [ClusterInfo("opensearch", "2.4.0"), ClusterInfo("opensearch", "3.1.0")])
def test_opensearch_2_and_3_are_supported(cluster):
    check_supported(cluster, "opensearch")


@pytest.mark.parametrize(("cluster", "engine", "message"), [
    (ClusterInfo("elasticsearch", "7.17.29"), "elasticsearch", "elasticsearch 7.17.29; this package publishes to "
     "elasticsearch 8.x and 9.x only"),
    (ClusterInfo("opensearch", "1.3.20"), "opensearch", "opensearch 2.x and 3.x only"),
    (ClusterInfo("opensearch", "2.19.3"), "elasticsearch", "is elasticsearch: set SEARCH_ENGINE=opensearch"),
    (ClusterInfo("elasticsearch", "9.1.4"), "opensearch", "set SEARCH_ENGINE=elasticsearch"),
])
def test_other_versions_and_the_other_engine_are_refused_naming_the_variable(cluster, engine, message):
    with pytest.raises(UnsupportedCluster, match=message):
        check_supported(cluster, engine)


@pytest.mark.parametrize(("cluster_major", "client_major", "asked"), [(8, 9, 8), (9, 9, 9), (9, 8, 8), (8, 8, 8)])
def test_the_rest_api_version_asked_is_one_the_cluster_accepts(cluster_major, client_major, asked):
    assert compatible_with(cluster_major, client_major) == asked


def test_a_lease_is_taken_over_by_its_own_holder_or_once_it_ran_out():
    held = {"holder": "run-a", "expires_at": 10_000}
    assert not may_take(held, "run-b", now_ms=9_999)
    assert may_take(held, "run-b", now_ms=10_000)
    assert may_take(held, "run-a", now_ms=0)  # a retried step of the same run


def test_credentials_written_into_the_url_are_masked_in_messages():
    from dify_pipeline.resources.search import SearchCluster

    assert SearchCluster(url="https://pipeline:s3cret@es.internal:9200").shown_url == "https://***@es.internal:9200"
    assert SearchCluster(url="http://127.0.0.1:9200").shown_url == "http://127.0.0.1:9200"


def test_the_lease_index_is_outside_the_alias_wildcard():
    assert not lease_index("tickets_enriched").startswith("tickets_enriched")
