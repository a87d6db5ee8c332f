"""A search cluster that runs inside a test: Elasticsearch 8, Elasticsearch 9 or OpenSearch, as configured.

It answers like a single node of the configured product and version on the paths the pipeline uses: `GET /`,
indices with mappings enforced (`dynamic: strict`, typed fields), aliases, single documents (with `op_type=create`
and `if_seq_no`/`if_primary_term`), `_bulk`, `_count`, `_search` (`term`/`terms`/`bool` queries and a `terms`
aggregation, see `elasticsearch_query`) and `_delete_by_query`. The product shows where a client notices it:
Elasticsearch sends `X-Elastic-Product` and enforces its REST API compatibility headers (`compatible-with=N`
must be the node's major or the one before, the same on `Accept` and `Content-Type`), with the real error
bodies; OpenSearch sends no product header, reports `distribution: opensearch` and refuses Elasticsearch's
vendor media types with 406. With `sigv4` set it is Amazon OpenSearch Service: every request must carry an AWS
Signature V4 for the configured credentials, recomputed here with botocore's signer, else 403 with AWS's text.

Near-real-time like the real thing: writes reach `_search`, `_count` and `_delete_by_query` only after a
refresh (`POST /_refresh`, or `refresh=true|wait_for` on the write), and it never refreshes on its own (as if
`refresh_interval: -1`), so a pipeline that forgets to refresh fails its tests deterministically. `GET _doc`
is realtime. `_delete_by_query` deletes what was searchable, and reports a version conflict (409 unless
`conflicts=proceed`) for a document written since the last refresh, as the real servers do.

Faults for resilience tests: per-item 429 / mapping errors inside `_bulk` and whole-request 429 / 503
(`ItemFault`, `RequestFault`). Control API (index names cannot start with `_`): `GET /_emulator/stats`,
`POST /_emulator/config` (an `ElasticsearchEmulatorConfig` as JSON), `POST /_emulator/reset`.

Anything else (scoring, sorting, scroll, templates, scripts, other queries) answers 400 rather than
something silently wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import hashlib
import hmac
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dify_pipeline_dev.emulators.elasticsearch_query import (
    EsError,
    aggregate,
    bad_query,
    check_document,
    check_mapping_types,
    compile_query,
    merge_mappings,
)
from dify_pipeline_dev.emulators.server import serve_forever


class ItemFault(BaseModel):
    """Fail matching items inside a `_bulk` (conditions combine; none set = every item)."""

    kind: Literal["rejected_429", "mapping_error"]
    id_contains: str | None = None  # items whose _id contains this
    every_nth: int | None = None  # every Nth bulk item received since the last configure/reset
    times: int | None = None  # fail a given client-sent _id only its first K times (auto-ids share one count)


class RequestFault(BaseModel):
    """Answer the next `first_n` requests whose path contains `path_contains` with `status`."""

    status: Literal[429, 503]
    path_contains: str = "_bulk"
    first_n: int = 1


class SigV4Credentials(BaseModel):
    """The AWS credentials requests must be signed with (Amazon OpenSearch Service's IAM access policy)."""

    access_key: str
    secret_key: str
    session_token: str | None = None
    region: str = "us-east-1"
    service: str = "es"


class ElasticsearchEmulatorConfig(BaseModel):
    """What the emulator pretends to be; without credentials configured it accepts any request."""

    product: Literal["elasticsearch", "opensearch"] = "elasticsearch"
    version: str = "9.1.4"
    api_key: str | None = None  # require `Authorization: ApiKey <api_key>` (the client's encoded form)
    basic_auth: tuple[str, str] | None = None  # or accept HTTP basic with these (user, password)
    sigv4: SigV4Credentials | None = None  # or require an AWS Signature V4 with these
    item_faults: list[ItemFault] = []
    request_faults: list[RequestFault] = []
    bulk_latency_ms: float = 0.0  # each `_bulk` takes this long before it is applied (a loaded cluster)


# The flavours the pipeline supports, as the load tests run them.
FLAVOURS: dict[str, dict[str, str]] = {
    "elasticsearch-8": {"product": "elasticsearch", "version": "8.19.4"},
    "elasticsearch-9": {"product": "elasticsearch", "version": "9.1.4"},
    "opensearch": {"product": "opensearch", "version": "2.19.3"},
}


# Stored documents never form cycles, so the garbage collector need not scan them: after this many are written
# they are frozen out of its scans (gc.freeze), else a full collection during a count walks a million documents.
FREEZE_AFTER_DOCUMENTS = 20_000


@dataclass(slots=True, frozen=True)
class StoredDoc:
    """One version of a document; replaced, never changed, so a refresh's snapshot stays as it was."""

    source: dict
    version: int
    seq_no: int


@dataclass(eq=False)
class Index:
    """An index: its mapping and settings, plus a realtime and a refreshed view of its documents."""

    name: str
    mappings: dict
    settings: dict[str, Any]  # flat keys without the `index.` prefix
    aliases: dict[str, dict]
    uuid: str = field(default_factory=lambda: uuid.uuid4().hex[:22])
    created_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    docs: dict[str, StoredDoc] = field(default_factory=dict)  # realtime: what GET _doc sees
    searchable: dict[str, StoredDoc] = field(default_factory=dict)  # as of the last refresh: what _search sees
    unrefreshed: set[str] = field(default_factory=set)
    next_seq_no: int = 0

    def put(self, doc_id: str, source: dict) -> StoredDoc:
        old = self.docs.get(doc_id)
        doc = StoredDoc(source, old.version + 1 if old else 1, self.next_seq_no)
        self.next_seq_no += 1
        self.docs[doc_id] = doc
        self.unrefreshed.add(doc_id)
        return doc

    def remove(self, doc_id: str) -> StoredDoc | None:
        """Delete a document; the returned tombstone carries the delete's version and seq_no."""
        old = self.docs.pop(doc_id, None)
        if old is None:
            return None
        self.unrefreshed.add(doc_id)
        self.next_seq_no += 1
        return StoredDoc(old.source, old.version + 1, self.next_seq_no - 1)

    def refresh(self) -> None:
        for doc_id in self.unrefreshed:
            doc = self.docs.get(doc_id)
            if doc is None:
                self.searchable.pop(doc_id, None)
            else:
                self.searchable[doc_id] = doc
        self.unrefreshed.clear()


@dataclass
class Call:
    """One request as the handlers see it."""

    method: str
    url_path: str
    path: Mapping[str, str]
    params: Mapping[str, str]
    raw: bytes

    def json(self) -> Any:
        if not self.raw.strip():
            return None
        try:
            return json.loads(self.raw)
        except ValueError as error:
            raise EsError(400, "x_content_parse_exception", f"Failed to parse request body: {error}") from None

    def refresh_requested(self) -> bool:
        return self.params.get("refresh", "false") in ("", "true", "wait_for")


class Hit(NamedTuple):
    index: Index
    doc_id: str
    doc: StoredDoc


Handler = Callable[[Call], tuple[int, Any]]
BULK_ACTIONS = ("index", "create", "delete")
SEARCH_KEYS = {"query", "size", "track_total_hits", "aggs", "aggregations"}
ALIAS_PROPERTIES = ("is_write_index", "filter", "routing", "index_routing", "search_routing", "is_hidden")
SHARDS_WRITTEN = {"total": 2, "successful": 1, "failed": 0}  # one primary, its replica unassigned (single node)
_COMPATIBLE_WITH = re.compile(r"compatible-with=(\d+)")
_VENDOR_MEDIA_TYPE = re.compile(r"application/vnd\.elasticsearch\+")
_SIGV4_FIELDS = re.compile(r"(Credential|SignedHeaders|Signature)=([^,\s]+)")
SIGV4_MAX_SKEW = timedelta(minutes=5)
_logger = logging.getLogger(__name__)


def _illegal(reason: str) -> EsError:
    return EsError(400, "illegal_argument_exception", reason)


def _invalid(problem: str) -> EsError:
    return EsError(400, "action_request_validation_exception", f"Validation Failed: 1: {problem};")


def _index_not_found(name: str) -> EsError:
    extra = {"resource.type": "index_or_alias", "resource.id": name, "index_uuid": "_na_", "index": name}
    return EsError(404, "index_not_found_exception", f"no such index [{name}]", **extra)


class PlainError(Exception):
    """A refusal the server sends in a shape of its own (406 media type, AWS's 403, OpenSearch's 401 text)."""

    def __init__(self, status: int, payload: Any, headers: dict[str, list[str]] | None = None) -> None:
        super().__init__(str(payload))
        self.status, self.payload, self.headers = status, payload, headers or {}


def _compatible_version(media_type: str) -> int | None:
    found = _COMPATIBLE_WITH.search(media_type)
    return int(found.group(1)) if found else None


def _unsupported_content_type(content_type: str) -> PlainError:
    return PlainError(406, {"error": f"Content-Type header [{content_type}] is not supported", "status": 406})


def _refuse_media_type(reason: str) -> None:
    """Elasticsearch wraps the compatibility check's refusal in a media_type_header_exception."""
    wrapper = "Invalid media-type value on headers [Accept, Content-Type]"
    raise EsError(400, "media_type_header_exception", wrapper,
                  root_cause={"type": "media_type_header_exception", "reason": wrapper},
                  caused_by={"type": "status_exception", "reason": reason})


def _check_index_name(name: str) -> None:
    reason = None
    if name != name.lower():
        reason = "must be lowercase"
    elif name.startswith(("_", "-", "+")):
        reason = "must not start with '_', '-', or '+'"
    elif any(char in name for char in '\\/*?"<>| ,#:'):
        reason = 'must not contain the following characters [ , ", *, \\, <, |, ,, >, /, ?]'
    if reason:
        raise EsError(400, "invalid_index_name_exception", f"Invalid index name [{name}], {reason}", index=name)


def _flat_settings(settings: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}".removeprefix("index.")] = value
    return flat


def _setting_text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _settings_as_returned(index: Index) -> dict:
    """Settings the way GET /{index} shows them: nested under `index`, values as strings."""
    flat = {"number_of_shards": "1", "number_of_replicas": "1", **index.settings}
    flat |= {"uuid": index.uuid, "provided_name": index.name, "creation_date": str(index.created_ms)}
    nested: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = [_setting_text(v) for v in value] if isinstance(value, list) else _setting_text(value)
    return {"index": nested}


def _shard_of(index: Index) -> dict[str, str]:
    return {"index_uuid": index.uuid, "shard": "0", "index": index.name}


def _shards(count: int) -> dict:
    return {"total": count, "successful": count, "skipped": 0, "failed": 0}


def _took_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _new_doc_id() -> str:
    return base64.urlsafe_b64encode(os.urandom(15)).decode()


class ElasticsearchEmulator:
    """A single search node over HTTP, in memory. Serve `app` with `serve_in_thread(emulator.app)`."""

    def __init__(self, config: ElasticsearchEmulatorConfig | None = None) -> None:
        self._lock = threading.RLock()  # handlers run on the server's loop; control calls may come from tests
        self._config = config or ElasticsearchEmulatorConfig()
        self._bulk_in_flight = 0  # bulks received and not yet answered (only counted with bulk_latency_ms)
        self._cluster_uuid = uuid.uuid4().hex[:22]
        self.reset()
        self._routes = self._build_routes()
        self.app = Starlette(routes=self._routes)

    # ------------------------------------------------------------ control

    def configure(self, config: ElasticsearchEmulatorConfig) -> None:
        """Replace the configuration (auth, version, faults); fault counters start over, data stays."""
        with self._lock:
            self._config = config
            self._reset_faults()

    def reset(self) -> None:
        """Drop all indices and counters; keep the configuration."""
        with self._lock:
            self._indices: dict[str, Index] = {}
            self._requests: Counter[str] = Counter()
            self._statuses: Counter[str] = Counter()
            self._bulk_requests = 0
            self._bulk_bytes = 0
            self._written_since_freeze = 0
            self._bulk_items: defaultdict[str, Counter[str]] = defaultdict(Counter)
            self._item_faults_injected = 0
            self._request_faults_injected = 0
            self._reset_faults()

    def _reset_faults(self) -> None:
        self._items_received = 0
        self._item_fault_uses: Counter[tuple[int, str | None]] = Counter()
        self._request_faults_left = [fault.first_n for fault in self._config.request_faults]

    def stats(self) -> dict:
        """Counters since the last reset (control API calls excluded)."""
        with self._lock:
            return {
                "requests": dict(self._requests),  # "POST /{index}/_bulk" -> count
                "responses_by_status": dict(self._statuses),
                "bulk_requests": self._bulk_requests,
                "bulk_in_flight": self._bulk_in_flight,
                "bulk_bytes": self._bulk_bytes,
                "bulk_items": {action: dict(results) for action, results in self._bulk_items.items()},
                "item_faults_injected": self._item_faults_injected,
                "request_faults_injected": self._request_faults_injected,
                "indices": {
                    name: {"docs": len(index.docs), "searchable_docs": len(index.searchable)}
                    for name, index in self._indices.items()
                },
            }

    def documents(self, index: str) -> dict[str, dict]:
        """Realtime `{_id: _source}` of an index or single-index alias (empty if it does not exist).
        The sources are the stored dicts: read them, do not change them."""
        with self._lock:
            try:
                return {doc_id: doc.source for doc_id, doc in self._single(index).docs.items()}
            except EsError:
                return {}

    # ------------------------------------------------------------ HTTP plumbing

    def _build_routes(self) -> list[Route]:
        s = self
        table: list[tuple[str, dict[str, Handler]]] = [
            ("/_emulator/stats", {"GET": lambda call: (200, s.stats())}),
            ("/_emulator/config", {"POST": s._control_config}),
            ("/_emulator/reset", {"POST": s._control_reset}),
            ("/", {"GET": s._info, "HEAD": lambda call: (200, None)}),
            ("/_bulk", {"POST": s._bulk, "PUT": s._bulk}),
            ("/_refresh", {"POST": s._refresh, "GET": s._refresh}),
            ("/_aliases", {"POST": s._update_aliases}),
            ("/_alias/{name}", {"GET": s._get_aliases, "HEAD": s._get_aliases}),
            ("/{index}", {"PUT": s._create_index, "GET": s._get_index, "HEAD": s._get_index,
                          "DELETE": s._delete_index}),
            ("/{index}/_mapping", {"GET": s._get_mapping, "PUT": s._put_mapping, "POST": s._put_mapping}),
            ("/{index}/_alias/{name}", {"GET": s._get_aliases, "HEAD": s._get_aliases, "PUT": s._put_alias,
                                        "POST": s._put_alias, "DELETE": s._delete_alias}),
            ("/{index}/_refresh", {"POST": s._refresh, "GET": s._refresh}),
            ("/{index}/_bulk", {"POST": s._bulk, "PUT": s._bulk}),
            ("/{index}/_search", {"GET": s._search, "POST": s._search}),
            ("/{index}/_count", {"GET": s._count, "POST": s._count}),
            ("/{index}/_delete_by_query", {"POST": s._delete_by_query}),
            ("/{index}/_doc", {"POST": s._index_doc}),
            ("/{index}/_doc/{id}", {"GET": s._get_doc, "HEAD": s._get_doc, "PUT": s._index_doc,
                                    "POST": s._index_doc, "DELETE": s._delete_doc}),
            ("/{index}/_create/{id}", {"PUT": s._create_doc, "POST": s._create_doc}),
        ]
        routes = [Route(path, self._endpoint(path, handlers), methods=list(handlers)) for path, handlers in table]
        every_method = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
        unknown = {method: self._no_handler for method in every_method}
        return routes + [Route("/{path:path}", self._endpoint("<unknown>", unknown), methods=every_method)]

    def _endpoint(self, pattern: str, handlers: dict[str, Handler]) -> Callable:
        control = pattern.startswith("/_emulator")

        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            if pattern.endswith("_bulk") and self._config.bulk_latency_ms:
                self._bulk_in_flight += 1
                try:
                    await asyncio.sleep(self._config.bulk_latency_ms / 1000)
                finally:
                    self._bulk_in_flight -= 1
            with self._lock:
                return self._respond(request, raw, pattern, handlers, control)

        return endpoint

    def _respond(
        self, request: Request, raw: bytes, pattern: str, handlers: dict[str, Handler], control: bool
    ) -> Response:
        method = request.method
        handler = handlers.get(method) or handlers["GET"]  # Starlette routes HEAD here only beside a GET
        call = Call(method, request.url.path, request.path_params, request.query_params, raw)
        headers: dict[str, list[str]] = {}
        compatible_with = None
        elastic = self._config.product == "elasticsearch"
        try:
            if not control:
                compatible_with = self._check_media_types(request, raw)
                self._authenticate(request, raw)
                self._inject_request_fault(call.url_path)
            status, payload = handler(call)
        except EsError as error:
            status, payload, headers = error.status, error.body(), error.headers
        except PlainError as error:  # errors the server renders in another shape than an exception body
            status, payload, headers = error.status, error.payload, error.headers
        except Exception as error:  # an emulator bug: answer in the server's shape so the client's message shows it
            _logger.exception("search emulator failed on %s %s", method, call.url_path)
            status, payload = 500, EsError(500, "emulator_exception", repr(error)).body()
        if not control:
            self._requests[f"{method} {pattern}"] += 1
            self._statuses[str(status)] += 1
        if isinstance(payload, str):
            body, content_type = payload.encode(), "text/plain; charset=UTF-8"
        elif payload is None or method == "HEAD":
            body, content_type = b"", None
        else:
            body = json.dumps(payload, separators=(",", ":")).encode()
            if compatible_with:
                content_type = f"application/vnd.elasticsearch+json;compatible-with={compatible_with}"
            else:
                content_type = "application/json" if elastic else "application/json; charset=UTF-8"
        response = Response(body, status_code=status)
        if elastic and not control:
            response.headers["X-Elastic-Product"] = "Elasticsearch"
        if content_type and body:
            response.headers["Content-Type"] = content_type
        for name, values in headers.items():
            for value in values:
                response.headers.append(name, value)
        return response

    def _check_media_types(self, request: Request, raw: bytes) -> int | None:
        """The `compatible-with` version asked for (None: plain JSON); refuses what the product refuses."""
        accept = request.headers.get("accept", "")
        content_type = request.headers.get("content-type", "")
        if self._config.product == "opensearch":  # no compatibility mode: the vendor types are unknown media types
            if raw and (_VENDOR_MEDIA_TYPE.search(content_type) or not re.search(r"json|ndjson", content_type)):
                raise _unsupported_content_type(content_type)
            return None
        if raw and not re.search(r"json|ndjson", content_type):
            raise _unsupported_content_type(content_type)
        current = int(self._config.version.split(".")[0])
        oldest = current - 1
        asked_accept = _compatible_version(accept)
        asked_content = _compatible_version(content_type) if raw else None
        accept_version = current if asked_accept is None else asked_accept
        content_version = current if asked_content is None else asked_content
        # The checks and texts of Elasticsearch's RestCompatibleVersionHelper, in its order.
        if not oldest <= accept_version <= current:
            _refuse_media_type(f"Accept version must be either version {current} or {oldest}, but found "
                               f"{accept_version}. Accept={accept}")
        if raw:
            if not oldest <= content_version <= current:
                _refuse_media_type(f"Content-Type version must be either version {current} or {oldest}, but found "
                                   f"{content_version}. Content-Type={content_type}")
            required = "A compatible version is required on both Content-Type and Accept headers if either one has "
            if content_version != accept_version:
                _refuse_media_type(f"{required}requested a compatible version and the compatible versions must "
                                   f"match. Accept={accept}, Content-Type={content_type}")
            if (asked_accept is None) != (asked_content is None):
                _refuse_media_type(f"{required}requested a compatible version. Accept={accept}, "
                                   f"Content-Type={content_type}")
        return asked_accept

    def _authenticate(self, request: Request, raw: bytes) -> None:
        config = self._config
        if config.sigv4 is not None:
            return self._check_signature(request, raw, config.sigv4)
        if config.api_key is None and config.basic_auth is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        if config.api_key is not None and scheme.lower() == "apikey" and credentials == config.api_key:
            return
        if config.basic_auth is not None and scheme.lower() == "basic":
            expected = base64.b64encode(":".join(config.basic_auth).encode()).decode()
            if credentials == expected:
                return
        if config.product == "opensearch":  # the security plugin answers in plain text
            raise PlainError(401, "Unauthorized", {"WWW-Authenticate": ['Basic realm="OpenSearch Security"']})
        path = request.url.path
        if not header:
            reason = f"missing authentication credentials for REST request [{path}]"
        elif scheme.lower() == "basic":
            user = base64.b64decode(credentials + "==").decode(errors="replace").partition(":")[0]
            reason = f"unable to authenticate user [{user}] for REST request [{path}]"
        else:
            reason = "unable to authenticate with provided credentials and anonymous access is not allowed"
        challenges = ['Basic realm="security", charset="UTF-8"'] if config.basic_auth else []
        challenges += ["ApiKey"] if config.api_key else []
        error = EsError(401, "security_exception", reason, header={"WWW-Authenticate": challenges})
        error.headers = {"WWW-Authenticate": challenges}
        raise error

    @staticmethod
    def _check_signature(request: Request, raw: bytes, expected: SigV4Credentials) -> None:
        """Accept only a valid AWS Signature V4 of this very request, as Amazon OpenSearch Service does: the
        signature is recomputed with botocore's signer from the known credentials and the headers the client
        says it signed."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        header = request.headers.get("authorization", "")
        if not header:
            action = f"es:ESHttp{request.method.title()}"
            reason = (f"User: anonymous is not authorized to perform: {action} because no resource-based policy "
                      f"allows the {action} action")
            raise PlainError(403, {"Message": reason})
        fields = dict(_SIGV4_FIELDS.findall(header))
        missing = [f"Authorization header requires '{name}' parameter." for name in ("Credential", "Signature",
                   "SignedHeaders") if name not in fields]
        amz_date = request.headers.get("x-amz-date")
        if not amz_date:
            missing.append("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
        if not header.startswith("AWS4-HMAC-SHA256 ") or missing:
            raise PlainError(403, {"message": " ".join(missing or ["Authorization header is invalid."])
                                   + f" Authorization={header}"})
        access_key, _, scope = fields["Credential"].partition("/")
        token = request.headers.get("x-amz-security-token")
        if access_key != expected.access_key or token != expected.session_token:
            raise PlainError(403, {"message": "The security token included in the request is invalid."})
        _, region, service = (scope.split("/") + ["", "", ""])[:3]
        if region != expected.region:
            raise PlainError(403, {"message": f"Credential should be scoped to a valid region, not '{region}'. "})
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        now = datetime.now(UTC)
        if abs(now - signed_at) > SIGV4_MAX_SKEW:
            earliest = (now - SIGV4_MAX_SKEW).strftime("%Y%m%dT%H%M%SZ")
            reason = f"Signature expired: {amz_date} is now earlier than {earliest} ({now:%Y%m%dT%H%M%SZ} - 5 min.)"
            raise PlainError(403, {"message": reason})
        signed = fields["SignedHeaders"].split(";")
        target = request.scope.get("raw_path", b"").decode() or request.url.path
        query = request.scope.get("query_string", b"").decode()
        url = f"{request.url.scheme}://{request.headers.get('host', '')}{target}{'?' + query if query else ''}"
        copy = AWSRequest(method=request.method, url=url, data=raw,
                          headers={name: request.headers.get(name, "") for name in signed})
        copy.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(expected.access_key, expected.secret_key, expected.session_token),
                           service, region)
        body_hash = request.headers.get("x-amz-content-sha256")
        computed = signer.signature(signer.string_to_sign(copy, signer.canonical_request(copy)), copy)
        if (service != expected.service or "host" not in signed
                or (body_hash not in (None, hashlib.sha256(raw).hexdigest()))
                or not hmac.compare_digest(computed, fields["Signature"])):
            raise PlainError(403, {"message": "The request signature we calculated does not match the signature you "
                                   "provided. Check your AWS Secret Access Key and signing method. Consult the service "
                                   "documentation for details."})

    def _inject_request_fault(self, path: str) -> None:
        for position, fault in enumerate(self._config.request_faults):
            if self._request_faults_left[position] > 0 and fault.path_contains in path:
                self._request_faults_left[position] -= 1
                self._request_faults_injected += 1
                if fault.status == 429:
                    reason = "rejected execution of coordinating operation"
                    raise EsError(429, "es_rejected_execution_exception", reason)
                raise EsError(503, "cluster_block_exception", "blocked by: [SERVICE_UNAVAILABLE/2/no master];")

    def _injected_item_fault(self, doc_id: str | None) -> EsError | None:
        self._items_received += 1
        for position, fault in enumerate(self._config.item_faults):
            if fault.id_contains is not None and (doc_id is None or fault.id_contains not in doc_id):
                continue
            if fault.every_nth and self._items_received % fault.every_nth:
                continue
            if fault.times is not None:
                if self._item_fault_uses[(position, doc_id)] >= fault.times:
                    continue
                self._item_fault_uses[(position, doc_id)] += 1
            self._item_faults_injected += 1
            if fault.kind == "rejected_429":
                return EsError(429, "es_rejected_execution_exception", "rejected execution of primary operation")
            return EsError(400, "document_parsing_exception", f"failed to parse document with id '{doc_id}' (injected)")
        return None

    def _no_handler(self, call: Call) -> tuple[int, Any]:
        uri = f"uri [{call.url_path}] and method [{call.method}]"
        matching = [route for route in self._routes[:-1] if route.path_regex.match(call.url_path)]
        if matching:
            allowed = sorted({method for route in matching for method in route.methods or ()})
            return 405, {"error": f"Incorrect HTTP method for {uri}, allowed: {allowed}", "status": 405}
        return 400, {"error": f"no handler found for {uri}", "status": 400}

    def _control_config(self, call: Call) -> tuple[int, Any]:
        try:
            config = ElasticsearchEmulatorConfig.model_validate(call.json() or {})
        except ValidationError as error:
            raise EsError(400, "illegal_argument_exception", str(error)) from None
        self.configure(config)
        return 200, {"acknowledged": True}

    def _control_reset(self, call: Call) -> tuple[int, Any]:
        self.reset()
        return 200, {"acknowledged": True}

    def _info(self, call: Call) -> tuple[int, Any]:
        number = self._config.version
        major = int(number.split(".")[0])
        if self._config.product == "opensearch":
            lucene, wire, index = {2: ("9.12.1", "7.10.0", "7.0.0")}.get(major, ("10.2.1", "2.19.0", "2.0.0"))
            version = {"distribution": "opensearch", "number": number, "build_type": "tar"}
            tagline = "The OpenSearch Project: https://opensearch.org/"
        else:
            lucene, wire, index = {7: ("8.11.3", "6.8.0", "6.0.0-beta1"), 8: ("9.12.2", "7.17.0", "7.0.0")}.get(
                major, ("10.2.2", "8.19.0", "8.0.0"))
            version = {"number": number, "build_flavor": "default", "build_type": "docker"}
            tagline = "You Know, for Search"
        version |= {
            "build_hash": "0" * 40,
            "build_date": "2025-07-01T00:00:00.000Z",
            "build_snapshot": False,
            "lucene_version": lucene,
            "minimum_wire_compatibility_version": wire,
            "minimum_index_compatibility_version": index,
        }
        return 200, {
            "name": "emulator-node",
            "cluster_name": "dify-pipeline-emulator",
            "cluster_uuid": self._cluster_uuid,
            "version": version,
            "tagline": tagline,
        }

    # ------------------------------------------------------------ name resolution

    def _alias_holders(self, alias: str) -> list[Index]:
        return [index for index in self._indices.values() if alias in index.aliases]

    def _resolve(self, expression: str) -> list[Index]:
        """Indices named by a comma-separated list of names, aliases and wildcards (`_all`, `*`)."""
        found: dict[str, Index] = {}
        for part in expression.split(","):
            if part in ("_all", "*", ""):
                found.update(self._indices)
            elif "*" in part:
                for name, index in self._indices.items():
                    if fnmatchcase(name, part) or any(fnmatchcase(alias, part) for alias in index.aliases):
                        found[name] = index
            elif part in self._indices:
                found[part] = self._indices[part]
            elif holders := self._alias_holders(part):
                found.update((index.name, index) for index in holders)
            else:
                raise _index_not_found(part)
        return list(found.values())

    def _single(self, name: str) -> Index:
        if name in self._indices:
            return self._indices[name]
        holders = self._alias_holders(name)
        if len(holders) == 1:
            return holders[0]
        if not holders:
            raise _index_not_found(name)
        names = ", ".join(index.name for index in holders)
        raise _illegal(f"alias [{name}] has more than one index associated with it [{names}], can't execute a "
                       "single index op")

    def _write_index(self, name: str, auto_create: bool = True) -> Index:
        """Where a write to `name` goes: the index, the alias's write index, or a new index."""
        if name in self._indices:
            return self._indices[name]
        holders = self._alias_holders(name)
        if len(holders) == 1 and holders[0].aliases[name].get("is_write_index") is not False:
            return holders[0]
        writers = [index for index in holders if index.aliases[name].get("is_write_index")]
        if len(writers) == 1:
            return writers[0]
        if holders:
            raise _illegal(
                f"no write index is defined for alias [{name}]. The write index may be explicitly disabled using "
                "is_write_index=false or the alias points to multiple indices without one being designated as a "
                "write index"
            )
        if not auto_create:
            raise _index_not_found(name)
        return self._new_index(name, {})

    # ------------------------------------------------------------ indices, mappings, templates

    def _new_index(self, name: str, body: dict) -> Index:
        _check_index_name(name)
        if name in self._indices:
            index_uuid = self._indices[name].uuid
            reason = f"index [{name}/{index_uuid}] already exists"
            raise EsError(400, "resource_already_exists_exception", reason, index_uuid=index_uuid, index=name)
        if self._alias_holders(name):
            reason = f"Invalid index name [{name}], already exists as alias"
            raise EsError(400, "invalid_index_name_exception", reason, index=name)
        unknown = set(body) - {"mappings", "settings", "aliases"}
        if unknown:
            raise bad_query(f"unknown key [{sorted(unknown)[0]}] for create index")
        mappings = body.get("mappings") or {}
        check_mapping_types(mappings.get("properties", {}))
        settings = _flat_settings(body.get("settings") or {})
        aliases = body.get("aliases") or {}
        for alias in aliases:
            self._check_alias_name(alias)
        index = Index(name, mappings, settings, {alias: props or {} for alias, props in aliases.items()})
        self._indices[name] = index
        return index

    def _check_alias_name(self, alias: str) -> None:
        if alias in self._indices:
            reason = f"Invalid alias name [{alias}]: an index or data stream exists with the same name as the alias"
            raise EsError(400, "invalid_alias_name_exception", reason)

    def _create_index(self, call: Call) -> tuple[int, Any]:
        index = self._new_index(call.path["index"], call.json() or {})
        return 200, {"acknowledged": True, "shards_acknowledged": True, "index": index.name}

    def _get_index(self, call: Call) -> tuple[int, Any]:
        indices = self._resolve(call.path["index"])
        described = {}
        for index in indices:
            settings = _settings_as_returned(index)
            described[index.name] = {"aliases": index.aliases, "mappings": index.mappings, "settings": settings}
        return 200, described

    def _delete_index(self, call: Call) -> tuple[int, Any]:
        names = call.path["index"].split(",")
        for name in names:
            if "*" in name or name == "_all":  # action.destructive_requires_name defaults to true
                raise _illegal("Wildcard expressions or all indices are not allowed")
            if name not in self._indices and self._alias_holders(name):
                raise _illegal(f"The provided expression [{name}] matches an alias, specify the concrete indices")
            if name not in self._indices:
                raise _index_not_found(name)
        for name in names:
            self._indices.pop(name, None)
        return 200, {"acknowledged": True}

    def _get_mapping(self, call: Call) -> tuple[int, Any]:
        indices = self._resolve(call.path.get("index", "_all"))
        return 200, {index.name: {"mappings": index.mappings} for index in indices}

    def _put_mapping(self, call: Call) -> tuple[int, Any]:
        update = call.json() or {}
        check_mapping_types(update.get("properties", {}))
        indices = self._resolve(call.path["index"])
        merged = [merge_mappings(index.mappings, update) for index in indices]  # all or nothing
        for index, mappings in zip(indices, merged):
            index.mappings = mappings
        return 200, {"acknowledged": True}

    def _refresh(self, call: Call) -> tuple[int, Any]:
        indices = self._resolve(call.path.get("index", "_all"))
        for index in indices:
            index.refresh()
        return 200, {"_shards": {"total": 2 * len(indices), "successful": len(indices), "failed": 0}}

    # ------------------------------------------------------------ aliases

    def _apply_alias_actions(self, actions: Any) -> None:
        """Apply add/remove/remove_index actions all together, or none of them."""
        if not actions or not isinstance(actions, list):
            raise _invalid("no aliases actions specified")
        staged = {name: deepcopy(index.aliases) for name, index in self._indices.items()}
        removed: set[str] = set()
        for action in actions:
            ((kind, spec),) = action.items()
            expressions = spec.get("indices") or ([spec["index"]] if spec.get("index") else [])
            names = spec.get("aliases") or ([spec["alias"]] if spec.get("alias") else [])
            if not expressions or (not names and kind != "remove_index"):
                raise _invalid(f"[{kind}] needs an index and an alias")
            targets = [index.name for expr in expressions for index in self._resolve(expr)]
            if kind == "remove_index":
                removed.update(targets)
                continue
            for target in targets:
                for alias in names:
                    if kind == "add":
                        self._check_alias_name(alias)
                        staged[target][alias] = {key: spec[key] for key in ALIAS_PROPERTIES if key in spec}
                    elif kind == "remove":
                        matched = [name for name in staged[target] if fnmatchcase(name, alias)]
                        if not matched and spec.get("must_exist") is not False:
                            extra = {"resource.type": "aliases", "resource.id": alias}
                            raise EsError(404, "aliases_not_found_exception", f"aliases [{alias}] missing", **extra)
                        for name in matched:
                            del staged[target][name]
                    else:
                        raise bad_query(f"unknown alias action [{kind}]")
        writers: defaultdict[str, list[str]] = defaultdict(list)
        for name, aliases in staged.items():
            for alias, props in aliases.items():
                if props.get("is_write_index") and name not in removed:
                    writers[alias].append(name)
        for alias, names in writers.items():
            if len(names) > 1:
                reason = f"alias [{alias}] has more than one write index [{','.join(names)}]"
                raise EsError(400, "illegal_state_exception", reason)
        for name, aliases in staged.items():
            self._indices[name].aliases = aliases
        for name in removed:
            del self._indices[name]

    def _update_aliases(self, call: Call) -> tuple[int, Any]:
        self._apply_alias_actions((call.json() or {}).get("actions"))
        return 200, {"acknowledged": True, "errors": False}

    def _put_alias(self, call: Call) -> tuple[int, Any]:
        spec = {**(call.json() or {}), "index": call.path["index"], "alias": call.path["name"]}
        self._apply_alias_actions([{"add": spec}])
        return 200, {"acknowledged": True}

    def _delete_alias(self, call: Call) -> tuple[int, Any]:
        self._apply_alias_actions([{"remove": {"index": call.path["index"], "alias": call.path["name"]}}])
        return 200, {"acknowledged": True}

    def _get_aliases(self, call: Call) -> tuple[int, Any]:
        wanted = call.path.get("name")
        found = {}
        for index in self._resolve(call.path.get("index", "_all")):
            chosen = {
                alias: props
                for alias, props in index.aliases.items()
                if wanted is None or any(fnmatchcase(alias, pattern) for pattern in wanted.split(","))
            }
            if chosen or wanted is None:
                found[index.name] = {"aliases": chosen}
        if wanted and not found:
            return 404, {"error": f"alias [{wanted}] missing", "status": 404}
        return 200, found

    # ------------------------------------------------------------ documents

    def _check_and_map(self, index: Index, source: Any, doc_id: str) -> None:
        update = check_document(source, index.mappings, doc_id)
        if update:
            index.mappings = merge_mappings(index.mappings, update)

    @staticmethod
    def _written(index: Index, doc_id: str, doc: StoredDoc, result: str) -> dict:
        return {"_index": index.name, "_id": doc_id, "_version": doc.version, "result": result,
                "_shards": SHARDS_WRITTEN, "_seq_no": doc.seq_no, "_primary_term": 1}

    def _index_document(
        self, index: Index, doc_id: str | None, source: Any, op_type: str, expected: tuple[int, int] | None = None
    ) -> tuple[int, dict]:
        """Write a document; `expected` = (if_seq_no, if_primary_term): only over that very version."""
        if doc_id is None:
            doc_id = _new_doc_id()
        elif not doc_id:
            raise _invalid("if _id is specified it must not be empty")
        old = index.docs.get(doc_id)
        if op_type == "create" and old is not None:
            reason = f"[{doc_id}]: version conflict, document already exists (current version [{old.version}])"
            raise EsError(409, "version_conflict_engine_exception", reason, **_shard_of(index))
        self._check_expected(index, doc_id, old, expected)
        self._check_and_map(index, source, doc_id)
        doc = index.put(doc_id, source)
        if old:
            return 200, self._written(index, doc_id, doc, "updated")
        return 201, self._written(index, doc_id, doc, "created")

    @staticmethod
    def _check_expected(index: Index, doc_id: str, old: StoredDoc | None, expected: tuple[int, int] | None) -> None:
        if expected is None:
            return
        seq_no, term = expected
        required = f"[{doc_id}]: version conflict, required seqNo [{seq_no}], primary term [{term}]"
        if old is None:
            raise EsError(409, "version_conflict_engine_exception", f"{required} but no document was found",
                          **_shard_of(index))
        if (old.seq_no, 1) != (seq_no, term):
            reason = f"{required}. current document has seqNo [{old.seq_no}] and primary term [1]"
            raise EsError(409, "version_conflict_engine_exception", reason, **_shard_of(index))

    def _delete_document(self, index: Index, doc_id: str, expected: tuple[int, int] | None = None) -> tuple[int, dict]:
        self._check_expected(index, doc_id, index.docs.get(doc_id), expected)
        tombstone = index.remove(doc_id)
        if tombstone is None:
            missing = StoredDoc({}, 1, index.next_seq_no)
            return 404, self._written(index, doc_id, missing, "not_found")
        return 200, self._written(index, doc_id, tombstone, "deleted")

    def _after_write(self, call: Call, index: Index, outcome: tuple[int, dict]) -> tuple[int, dict]:
        if call.refresh_requested():
            index.refresh()
        return outcome

    @staticmethod
    def _expected(call: Call) -> tuple[int, int] | None:
        if "if_seq_no" not in call.params and "if_primary_term" not in call.params:
            return None
        if "if_seq_no" not in call.params or "if_primary_term" not in call.params:
            raise _invalid("ifSeqNo is set, but primary term is [0]")
        return int(call.params["if_seq_no"]), int(call.params["if_primary_term"])

    def _index_doc(self, call: Call) -> tuple[int, Any]:
        index = self._write_index(call.path["index"])
        op_type = call.params.get("op_type", "index")
        outcome = self._index_document(index, call.path.get("id"), call.json(), op_type, self._expected(call))
        return self._after_write(call, index, outcome)

    def _create_doc(self, call: Call) -> tuple[int, Any]:
        index = self._write_index(call.path["index"])
        return self._after_write(call, index, self._index_document(index, call.path["id"], call.json(), "create"))

    def _delete_doc(self, call: Call) -> tuple[int, Any]:
        index = self._write_index(call.path["index"], auto_create=False)
        return self._after_write(call, index, self._delete_document(index, call.path["id"], self._expected(call)))

    def _get_doc(self, call: Call) -> tuple[int, Any]:
        index = self._single(call.path["index"])
        doc_id = call.path["id"]
        if call.refresh_requested():
            index.refresh()
        realtime = call.params.get("realtime", "true") != "false"
        doc = (index.docs if realtime else index.searchable).get(doc_id)
        if doc is None:
            return 404, {"_index": index.name, "_id": doc_id, "found": False}
        return 200, {"_index": index.name, "_id": doc_id, "_version": doc.version, "_seq_no": doc.seq_no,
                     "_primary_term": 1, "found": True, "_source": doc.source}

    # ------------------------------------------------------------ _bulk

    def _bulk(self, call: Call) -> tuple[int, Any]:
        started = time.perf_counter()
        self._bulk_requests += 1
        self._bulk_bytes += len(call.raw)
        operations = self._parse_bulk(call.raw, call.path.get("index"))
        targets: dict[str, Index] = {}
        touched: dict[str, Index] = {}
        items = []
        errors = False
        for action, meta, source in operations:
            item = self._bulk_item(action, meta, source, targets, touched)
            errors = errors or "error" in item
            items.append({action: item})
        if call.refresh_requested():
            for index in touched.values():
                index.refresh()
        self._written_since_freeze += len(operations)
        if self._written_since_freeze >= FREEZE_AFTER_DOCUMENTS:
            gc.freeze()
            self._written_since_freeze = 0
        return 200, {"errors": errors, "took": _took_ms(started), "items": items}

    @staticmethod
    def _parse_bulk(raw: bytes, default_index: str | None) -> list[tuple[str, dict, Any]]:
        """(action, metadata, source) per operation; the whole request fails on a malformed line, as in ES."""
        if raw and not raw.endswith(b"\n"):
            raise _illegal("The bulk request must be terminated by a newline [\\n]")
        lines = raw.split(b"\n")
        operations = []
        position = 0
        while position < len(lines):
            line = lines[position]
            position += 1
            if not line or line.isspace():
                continue
            try:
                header = json.loads(line)
                ((action, meta),) = header.items()
                assert isinstance(meta, dict)
            except (ValueError, AttributeError, AssertionError):
                raise _illegal(f"Malformed action/metadata line [{position}], expected START_OBJECT") from None
            if action not in BULK_ACTIONS:
                expected = "expected field [create], [delete], [index] or [update] (update: not in the emulator)"
                raise _illegal(f"Malformed action/metadata line [{position}], {expected} but found [{action}]")
            if "_index" not in meta:
                if default_index is None:
                    raise _invalid("index is missing")
                meta["_index"] = default_index
            source = None
            if action != "delete":
                if position >= len(lines) or not lines[position].strip():
                    raise _illegal(f"Malformed action/metadata line [{position}]: {action} needs a source line")
                try:
                    source = json.loads(lines[position])
                except ValueError as error:
                    raise EsError(400, "x_content_parse_exception", f"[{position + 1}:1] {error}") from None
                position += 1
            operations.append((action, meta, source))
        if not operations:
            raise _invalid("no requests added")
        return operations

    def _bulk_item(
        self, action: str, meta: dict, source: Any, targets: dict[str, Index], touched: dict[str, Index]
    ) -> dict:
        name = meta["_index"]
        doc_id = None if meta.get("_id") is None else str(meta["_id"])
        try:
            fault = self._injected_item_fault(doc_id)
            if fault is not None:
                raise fault
            index = targets.get(name)
            if index is None:
                index = targets[name] = self._write_index(name, auto_create=action != "delete")
            name = index.name
            if action in ("index", "create"):
                status, result = self._index_document(index, doc_id, source, meta.get("op_type", action))
            elif doc_id is None:
                raise _invalid("id is missing")
            else:
                status, result = self._delete_document(index, doc_id)
            touched[index.name] = index
        except EsError as error:
            self._bulk_items[action]["failed"] += 1
            return {"_index": name, "_id": doc_id, "status": error.status, "error": error.cause()}
        self._bulk_items[action][result["result"]] += 1
        result["status"] = status
        return result

    # ------------------------------------------------------------ search, count, delete_by_query, scroll

    def _matching(self, indices: list[Index], query: Any) -> list[Hit]:
        hits = []
        for index in indices:
            matches = compile_query(query, index.mappings)
            searchable = index.searchable.items()
            hits.extend(Hit(index, doc_id, doc) for doc_id, doc in searchable if matches(doc_id, doc.source))
        return hits

    @staticmethod
    def _shard_failure(error: EsError, indices: list[Index]) -> EsError:
        """Errors found while running a query reach the client wrapped, as Elasticsearch wraps shard failures."""
        if error.type == "parsing_exception":
            return error
        cause = error.cause()
        failed = [{"shard": 0, "index": index.name, "node": "emulator", "reason": cause} for index in indices]
        return EsError(400, "search_phase_execution_exception", "all shards failed", root_cause=cause, phase="query",
                       grouped=True, failed_shards=failed, caused_by=cause)

    def _search(self, call: Call) -> tuple[int, Any]:
        started = time.perf_counter()
        body = call.json() or {}
        unsupported = set(body) - SEARCH_KEYS
        if unsupported or set(call.params) - {"size", "track_total_hits"}:
            options = sorted(unsupported | (set(call.params) - {"size", "track_total_hits"}))
            raise bad_query(f"search options {options} are not supported by the emulator")
        indices = self._resolve(call.path["index"])
        size = int(call.params.get("size", body.get("size", 10)))
        if size > 10_000:
            raise _illegal(f"Result window is too large, from + size must be at most [10000] but was [{size}].")
        try:
            hits = self._matching(indices, body.get("query"))
            aggs = body.get("aggs") or body.get("aggregations")
            aggregations = aggregate(aggs, [(hit.index.mappings, hit.doc.source) for hit in hits]) if aggs else None
        except EsError as error:
            raise self._shard_failure(error, indices) from None
        track = call.params.get("track_total_hits", body.get("track_total_hits"))
        limit = len(hits) if track in (True, "true") else int(track or 10_000)
        total = {"value": min(len(hits), limit), "relation": "eq" if len(hits) <= limit else "gte"}
        rendered = [{"_index": hit.index.name, "_id": hit.doc_id, "_score": 1.0, "_source": hit.doc.source}
                    for hit in hits[:size]]
        response = {"took": _took_ms(started), "timed_out": False, "_shards": _shards(len(indices)),
                    "hits": {"total": total, "max_score": 1.0 if rendered else None, "hits": rendered}}
        if aggregations is not None:
            response["aggregations"] = aggregations
        return 200, response

    def _count(self, call: Call) -> tuple[int, Any]:
        body = call.json() or {}
        if set(body) - {"query"} or "q" in call.params:
            raise bad_query(f"request does not support {sorted(set(body) - {'query'}) or ['q']}")
        indices = self._resolve(call.path["index"])
        try:
            count = len(self._matching(indices, body.get("query")))
        except EsError as error:
            raise self._shard_failure(error, indices) from None
        return 200, {"count": count, "_shards": _shards(len(indices))}

    def _delete_by_query(self, call: Call) -> tuple[int, Any]:
        started = time.perf_counter()
        body = call.json() or {}
        if "query" not in body:
            raise _invalid("query is missing")
        indices = self._resolve(call.path["index"])
        try:
            hits = self._matching(indices, body["query"])
        except EsError as error:
            raise self._shard_failure(error, indices) from None
        proceed = call.params.get("conflicts") == "proceed"
        deleted, conflicts, failures = 0, 0, []
        for hit in hits:
            live = hit.index.docs.get(hit.doc_id)
            if live is not None and live.seq_no == hit.doc.seq_no:
                hit.index.remove(hit.doc_id)
                deleted += 1
                continue
            conflicts += 1  # written or deleted since the last refresh
            if not proceed:  # the rest of the (single) batch still goes ahead, as in Elasticsearch
                reason = f"[{hit.doc_id}]: version conflict, required seqNo [{hit.doc.seq_no}]"
                cause = {"type": "version_conflict_engine_exception", "reason": reason, "index": hit.index.name}
                failures.append({"index": hit.index.name, "id": hit.doc_id, "cause": cause, "status": 409})
        if call.refresh_requested():
            for index in indices:
                index.refresh()
        return (409 if failures else 200), {
            "took": _took_ms(started), "timed_out": False, "total": deleted + conflicts, "deleted": deleted,
            "batches": 1, "version_conflicts": conflicts, "noops": 0, "retries": {"bulk": 0, "search": 0},
            "throttled_millis": 0, "requests_per_second": -1.0, "throttled_until_millis": 0, "failures": failures,
        }


def main(argv: list[str] | None = None) -> None:
    """`python -m dify_pipeline_dev.emulators.elasticsearch --port 0 --config '{"api_key": "..."}'`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--config", default="{}", help="ElasticsearchEmulatorConfig as JSON")
    args = parser.parse_args(argv)
    config = ElasticsearchEmulatorConfig.model_validate_json(args.config)
    port = args.port
    if port == 0:
        with socket.socket() as probe:
            probe.bind((args.host, 0))
            port = probe.getsockname()[1]
    print(f"ELASTICSEARCH_EMULATOR_URL=http://{args.host}:{port}", flush=True)
    serve_forever(ElasticsearchEmulator(config).app, args.host, port)


if __name__ == "__main__":
    main()
