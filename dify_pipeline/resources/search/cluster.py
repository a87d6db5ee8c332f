"""The search cluster as a Dagster resource: which engine, where, how to authenticate; `connect()` gives a sink."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from dify_pipeline.resources.search.sink import RETRIED_STATUSES, BulkSettings, ClientKind, SearchSink
from dify_pipeline.resources.search.versions import (
    ClusterInfo,
    UnsupportedCluster,
    check_supported,
    compatible_with,
    identify,
)

REQUEST_RETRIES = 3  # the client's own retries of a whole request, before the bulk helper's
_COMPATIBLE_WITH = re.compile(r"compatible-with=\d+")
_CREDENTIALS_IN_URL = re.compile(r"//[^/@]+@")
_VENDOR_MEDIA_TYPE = re.compile(r"application/vnd\.elasticsearch\+([\w-]+); ?compatible-with=\d+")


class SearchClusterError(Exception):
    """The cluster cannot be used as configured; the message says why and names the variable to fix."""


class SearchCluster(dg.ConfigurableResource):
    """An Elasticsearch 8.x/9.x or OpenSearch 2.x/3.x cluster and the alias readers use (`index`), backed by a
    versioned physical index the package owns."""

    url: str
    engine: Literal["elasticsearch", "opensearch"] = Field(
        default="elasticsearch", description="Which product the cluster is (SEARCH_ENGINE); picks the client library.")
    index: str = Field(default="tickets_enriched", description="The alias readers use; the data is in <index>-v<N>.")
    api_key: str | None = Field(default=None, description="Elasticsearch only (ELASTICSEARCH_API_KEY); never logged.")
    username: str | None = None
    password: str | None = None
    aws_sigv4: bool = Field(default=False, description="OpenSearch only: sign requests with AWS SigV4 (Amazon "
                            "OpenSearch Service), with credentials from the standard AWS chain.")
    aws_region: str | None = Field(default=None, description="The domain's region for SigV4 (default: AWS_REGION).")
    ca_file: str | None = Field(default=None, description="CA bundle for a private certificate authority.")
    verify_tls: bool = True
    request_timeout_seconds: float = 60.0
    chunk_size: int = Field(default=1000, ge=1, description="Documents per bulk request, at most.")
    max_chunk_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="Bytes per bulk request, at most.")
    parallel_requests: int = Field(default=4, ge=1, description="Bulk requests in flight (one streaming_bulk each).")
    max_retries: int = Field(default=5, ge=0, description="Retries of documents (or bulk requests) refused with 429.")
    initial_backoff_seconds: float = Field(default=1.0, ge=0, description="First wait before a retry; then doubles.")
    max_backoff_seconds: float = Field(default=60.0, ge=0)
    lease_seconds: float = Field(default=30.0, gt=0, description="A publishing step's hold on its day, renewed while "
                                 "it runs; a crashed holder's hold ends this long after its last renewal.")
    lease_wait_seconds: float = Field(default=1800.0, ge=0, description="How long a step waits for another run's "
                                      "publishing of the same day to end before it fails.")

    def physical_index(self, mapping_version: int) -> str:
        return f"{self.index}-v{mapping_version}"

    @property
    def shown_url(self) -> str:
        """The URL as messages show it: credentials written into it (`https://user:pass@host`) masked."""
        return _CREDENTIALS_IN_URL.sub("//***@", self.url)

    def connect(self) -> SearchSink:
        """A sink on the cluster, once `GET /` proved it reachable and of a supported product and version.

        Raises SearchClusterError naming the variable to fix when it is not."""
        if self.engine == "opensearch":
            client, kind = self._opensearch_client()
        else:
            client, kind = self._elasticsearch_client()
        try:
            cluster = self._identify(client, kind)
            check_supported(cluster, self.engine)
        except UnsupportedCluster as error:
            client.close()
            raise SearchClusterError(str(error)) from None
        except BaseException:
            client.close()
            raise
        if self.engine == "elasticsearch":
            import elasticsearch

            client.transport.compatible_with = compatible_with(cluster.major, elasticsearch.__version__[0])
        bulk = BulkSettings(self.chunk_size, self.max_chunk_bytes, self.parallel_requests, self.max_retries,
                            self.initial_backoff_seconds, self.max_backoff_seconds)
        return SearchSink(client, kind, cluster, self.index, bulk)

    # -- the two clients -------------------------------------------------------------------------------

    def _elasticsearch_client(self) -> tuple[Any, ClientKind]:
        import elasticsearch
        from elasticsearch import ApiError, ConflictError, Elasticsearch, NotFoundError, helpers

        if self.aws_sigv4:
            raise SearchClusterError("OPENSEARCH_AUTH=sigv4 needs SEARCH_ENGINE=opensearch: Elasticsearch has no "
                                     "AWS signing")
        options: dict = {
            "request_timeout": self.request_timeout_seconds,
            # A whole request answered 429/502/503/504, or a dropped connection, is retried by the client
            # itself; timed-out bulk requests are safe to resend (_id).
            "retry_on_status": RETRIED_STATUSES, "max_retries": REQUEST_RETRIES, "retry_on_timeout": True,
            "connections_per_node": max(10, self.parallel_requests + 2),
            "transport_class": _compatible_transport(),
        }
        if elasticsearch.__version__ >= (9, 5):  # from 9.5 elastic-transport waits between retries (jittered, doubling)
            options |= {"retry_backoff_base": self.initial_backoff_seconds,
                        "retry_backoff_cap": self.max_backoff_seconds}
        if self.api_key:
            options["api_key"] = self.api_key
        elif self.username:
            options["basic_auth"] = (self.username, self.password or "")
        if self.url.startswith("https"):
            options["verify_certs"] = self.verify_tls
            if self.ca_file:
                options["ca_certs"] = self.ca_file
        try:  # serializing the documents was a third of the load's CPU with json
            from elasticsearch.serializer import OrjsonSerializer

            options["serializer"] = OrjsonSerializer()
        except ImportError:  # orjson missing: the client's json serializer does the same, slower
            pass
        return Elasticsearch(self.url, **options), ClientKind(ApiError, ConflictError, NotFoundError, helpers)

    def _opensearch_client(self) -> tuple[Any, ClientKind]:
        try:
            from opensearchpy import ConflictError, NotFoundError, OpenSearch, TransportError, helpers
        except ImportError:
            raise SearchClusterError("SEARCH_ENGINE=opensearch needs opensearch-py: "
                                     "pip install 'dify_pipeline[opensearch]'") from None
        if self.api_key:
            raise SearchClusterError("ELASTICSEARCH_API_KEY is for Elasticsearch; OpenSearch takes basic auth "
                                     "(ELASTICSEARCH_USERNAME/PASSWORD) or OPENSEARCH_AUTH=sigv4")
        options: dict = {
            "timeout": self.request_timeout_seconds,
            "max_retries": REQUEST_RETRIES, "retry_on_status": RETRIED_STATUSES, "retry_on_timeout": True,
            "pool_maxsize": max(10, self.parallel_requests + 2),
        }
        if self.aws_sigv4:
            options["http_auth"] = self._aws_signer()
        elif self.username:
            options["http_auth"] = (self.username, self.password or "")
        if self.url.startswith("https"):
            options |= {"use_ssl": True, "verify_certs": self.verify_tls, "ssl_show_warn": self.verify_tls}
            if self.ca_file:
                options["ca_certs"] = self.ca_file
        return OpenSearch([self.url], **options), ClientKind(TransportError, ConflictError, NotFoundError, helpers)

    def _aws_signer(self):
        """SigV4 for Amazon OpenSearch Service, from the standard AWS chain (variables, profile, role)."""
        import botocore.session
        from opensearchpy import Urllib3AWSV4SignerAuth

        session = botocore.session.get_session()
        credentials = session.get_credentials()
        if credentials is None:
            raise SearchClusterError("OPENSEARCH_AUTH=sigv4 found no AWS credentials: set AWS_ACCESS_KEY_ID and "
                                     "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run with an instance or task role")
        region = self.aws_region or os.environ.get("AWS_REGION") or session.get_config_variable("region")
        if not region:
            raise SearchClusterError("OPENSEARCH_AUTH=sigv4 needs the domain's region: set OPENSEARCH_AWS_REGION "
                                     "(or AWS_REGION)")
        return Urllib3AWSV4SignerAuth(credentials, region, "es")  # refreshes rotating role credentials itself

    def _identify(self, client: Any, kind: ClientKind) -> ClusterInfo:
        """`GET /`; to Elasticsearch in plain JSON, which every version accepts."""
        try:
            if self.engine == "opensearch":
                return identify(client.info(), None)
            answer = client.perform_request("GET", "/")
        except kind.api_error as error:
            status = getattr(error, "status_code", None)
            body = getattr(error, "body", None) or getattr(error, "info", None)
            if isinstance(status, int) and 200 <= status < 300 and isinstance(body, dict):  # not Elasticsearch
                return identify(body, None)
            if isinstance(status, int):
                raise SearchClusterError(self._refusal(status, body or error)) from None
            raise SearchClusterError(f"ELASTICSEARCH_URL={self.shown_url} cannot be reached: {error}") from None
        except Exception as error:  # connection refused, DNS, TLS: the transport's own errors
            raise SearchClusterError(f"ELASTICSEARCH_URL={self.shown_url} cannot be reached: {type(error).__name__}: "
                                     f"{error}") from None
        return identify(answer.body, answer.meta.headers.get("x-elastic-product"))

    def _refusal(self, status: int | None, detail: Any) -> str:
        if status in (401, 403):
            if self.aws_sigv4:
                fix = "the AWS credentials (AWS_ACCESS_KEY_ID/SECRET_ACCESS_KEY or AWS_PROFILE), OPENSEARCH_AWS_REGION"
            elif self.api_key:
                fix = "ELASTICSEARCH_API_KEY"
            else:
                fix = "ELASTICSEARCH_USERNAME/ELASTICSEARCH_PASSWORD"
            return f"ELASTICSEARCH_URL={self.shown_url} refused the credentials ({status}): check {fix}"
        return f"ELASTICSEARCH_URL={self.shown_url} answered {status} to GET /: {str(detail)[:300]}"


def _compatible_transport():
    """elastic-transport's Transport, asking for the REST API version in `compatible_with` (set after `GET /`);
    until then, for `GET /`, plain JSON, which every version of Elasticsearch accepts."""
    from elastic_transport import Transport

    class CompatibleTransport(Transport):
        compatible_with: int | None = None

        def perform_request(self, method: str, target: str, **options: Any):
            headers = options.get("headers")
            if isinstance(headers, Mapping):
                options["headers"] = {name: self._media_type(value) for name, value in headers.items()}
            return super().perform_request(method, target, **options)

        def _media_type(self, value: Any) -> Any:
            if not isinstance(value, str):
                return value
            if self.compatible_with is None:
                return _VENDOR_MEDIA_TYPE.sub(r"application/\1", value)
            return _COMPATIBLE_WITH.sub(f"compatible-with={self.compatible_with}", value)

    return CompatibleTransport
