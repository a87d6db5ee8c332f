"""Which clusters the package publishes to, and which REST API compatibility version it asks each for."""

from __future__ import annotations

from typing import Literal, NamedTuple

Engine = Literal["elasticsearch", "opensearch"]
SUPPORTED_MAJORS: dict[Engine, tuple[int, ...]] = {"elasticsearch": (8, 9), "opensearch": (2, 3)}


class UnsupportedCluster(Exception):
    """The cluster is not one the package publishes to; the message names the variable to fix."""


class ClusterInfo(NamedTuple):
    """What `GET /` said the cluster is."""

    engine: Engine
    version: str

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])


def identify(info: dict, elastic_product_header: str | None) -> ClusterInfo:
    """The product and version of a `GET /` answer: OpenSearch says `distribution: opensearch`; Elasticsearch
    (7.14 and later) sends `X-Elastic-Product: Elasticsearch`. Anything else is refused."""
    version = info.get("version") or {}
    if version.get("distribution") == "opensearch":
        return ClusterInfo("opensearch", str(version.get("number", "")))
    if elastic_product_header == "Elasticsearch" and version.get("number"):
        return ClusterInfo("elasticsearch", str(version["number"]))
    raise UnsupportedCluster(
        f"ELASTICSEARCH_URL answers as neither Elasticsearch nor OpenSearch (version {version.get('number', '?')}, "
        f"tagline {info.get('tagline', '?')!r}): point it at an Elasticsearch 8.x/9.x or OpenSearch 2.x/3.x cluster"
    )


def check_supported(cluster: ClusterInfo, engine: Engine) -> None:
    """Refuse a cluster of the other engine, or of a major version the package was not built for."""
    if cluster.engine != engine:
        raise UnsupportedCluster(
            f"ELASTICSEARCH_URL is {cluster.engine} {cluster.version} but SEARCH_ENGINE is {engine}: "
            f"set SEARCH_ENGINE={cluster.engine}"
        )
    if cluster.major not in SUPPORTED_MAJORS[engine]:
        supported = " and ".join(f"{major}.x" for major in SUPPORTED_MAJORS[engine])
        raise UnsupportedCluster(
            f"ELASTICSEARCH_URL is {engine} {cluster.version}; this package publishes to {engine} {supported} only"
        )


def compatible_with(cluster_major: int, client_major: int) -> int:
    """The REST API version to ask an Elasticsearch cluster for: its own major, or the client's if older.

    An Elasticsearch node accepts its major and the one before (`compatible-with=8` on 8.x and 9.x), and the
    8.x client always asks for 8; the 9.x client asks for 9, which an 8.x node refuses, so it is told to ask
    for 8 there: the requests this package sends (bulk, count, search, delete_by_query, aliases) are the same
    in both REST API versions.
    """
    return min(cluster_major, client_major)
