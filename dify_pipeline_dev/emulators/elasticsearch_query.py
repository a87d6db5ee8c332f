"""How the search emulator reads documents: field types, mapping checks, the query DSL the pipeline sends
(`term`, `terms`, `bool`, `match_all`) and the `terms` aggregation. Pure functions over plain dicts, no HTTP.

Matching follows the mapping the way Elasticsearch and OpenSearch do: `term` on a `keyword` is exact, on a
`text` field it must equal one lower-cased token, on a `date` it compares instants; a field missing from the
mapping (e.g. under `dynamic: false`) matches nothing. Anything else is refused with a 400, never guessed.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

Matcher = Callable[[str, dict], bool]  # (doc id, source) -> matches
MappedDoc = tuple[dict, dict]  # (mappings of its index, source)

KEYWORD_TYPES = {"keyword", "constant_keyword", "wildcard"}
TEXT_TYPES = {"text", "match_only_text"}
INTEGER_BOUNDS = {"long": 2**63, "integer": 2**31, "short": 2**15, "byte": 2**7}
FLOAT_TYPES = {"float", "double", "half_float", "scaled_float"}
OBJECT_TYPES = {"object", "nested"}
# Accepted in mappings but not checked or queried beyond existence.
OTHER_TYPES = {"ip", "flattened", "geo_point", "dense_vector", "sparse_vector", "binary", "date_nanos", "version"}
KNOWN_TYPES = KEYWORD_TYPES | TEXT_TYPES | set(INTEGER_BOUNDS) | FLOAT_TYPES | OBJECT_TYPES | OTHER_TYPES
KNOWN_TYPES |= {"date", "boolean"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}(:\d{2}(:\d{2}([.,]\d{1,9})?)?)?(Z|[+-]\d{2}(:?\d{2})?)?)?")
_TOKEN = re.compile(r"\w+")
COERCE_ERRORS = (ValueError, TypeError, OverflowError)
STRING_TYPES = KEYWORD_TYPES | TEXT_TYPES


class EsError(Exception):
    """An Elasticsearch error: rendered as `{"error": {...}, "status": N}` or as a bulk item's `error`."""

    def __init__(self, status: int, type_: str, reason: str, root_cause: dict | None = None, **extra: Any) -> None:
        super().__init__(reason)
        self.status, self.type, self.reason, self.extra = status, type_, reason, extra
        self.root_cause = root_cause  # when the error wraps another (shard failures)
        self.headers: dict[str, list[str]] = {}  # extra response headers (WWW-Authenticate)

    def cause(self) -> dict[str, Any]:
        return {"type": self.type, "reason": self.reason, **self.extra}

    def body(self) -> dict[str, Any]:
        return {"error": {"root_cause": [self.root_cause or self.cause()], **self.cause()}, "status": self.status}


def bad_query(reason: str, type_: str = "parsing_exception") -> EsError:
    return EsError(400, type_, reason)


# ---------------------------------------------------------------- field values


def tokens(text: str) -> list[str]:
    """Roughly the standard analyzer: lower-cased word tokens."""
    return _TOKEN.findall(text.lower())


@functools.lru_cache(maxsize=65_536)  # a day's documents share a few dates: parse each once, not per document
def parse_date_millis(value: Any) -> int:
    """Epoch millis from `strict_date_optional_time||epoch_millis` (ISO-8601 with or without offset, or millis)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        if _ISO_DATE.fullmatch(text):
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return (moment - EPOCH) // timedelta(milliseconds=1)
    raise ValueError(f"failed to parse date field [{value}] with format [strict_date_optional_time||epoch_millis]")


def format_date_millis(millis: int) -> str:
    moment = EPOCH + timedelta(milliseconds=millis)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis % 1000:03d}Z"


def coerce(field_type: str, value: Any) -> Any:
    """The value Elasticsearch indexes for `value` in a field of `field_type`; ValueError when it would refuse it."""
    if isinstance(value, (dict, list)) and field_type not in OTHER_TYPES:
        raise ValueError(f"Can't get text on a START_OBJECT for {value!r}")
    if field_type in KEYWORD_TYPES or field_type in TEXT_TYPES:
        return ("true" if value else "false") if isinstance(value, bool) else str(value)
    if field_type in INTEGER_BOUNDS:
        _refuse_boolean(value)
        number = int(float(value)) if isinstance(value, (float, str)) else int(value)
        bound = INTEGER_BOUNDS[field_type]
        if not -bound <= number < bound:
            raise ValueError(f"Numeric value ({value}) out of range of {field_type}")
        return number
    if field_type in FLOAT_TYPES:
        _refuse_boolean(value)
        return float(value)
    if field_type == "date":
        return parse_date_millis(value)
    if field_type == "boolean":
        if isinstance(value, bool):
            return value
        if value in ("true", "false", ""):
            return value == "true"
        raise ValueError(f"Failed to parse value [{value}] as only [true] or [false] are allowed.")
    return value


def _refuse_boolean(value: Any) -> None:
    if isinstance(value, bool):
        raise ValueError(f"Current token (VALUE_{str(value).upper()}) not numeric, can not use numeric value accessors")


class FieldSpec(NamedTuple):
    """Where a queried field lives in `_source` and how it is indexed."""

    path: tuple[str, ...]
    type: str


def field_type(mapping: dict) -> str:
    return mapping.get("type", "object")


def resolve_field(mappings: dict, name: str) -> FieldSpec | None:
    """The mapped field `name` (dotted, multi-fields like `title.keyword` included), or None if unmapped."""
    properties: dict | None = mappings.get("properties", {})
    mapping: dict | None = None
    path: list[str] = []
    parts = name.split(".")
    for position, part in enumerate(parts):
        subfields = mapping.get("fields", {}) if mapping else {}
        if part in subfields and position == len(parts) - 1:
            return FieldSpec(tuple(path), subfields[part].get("type", "keyword"))
        if not properties or part not in properties:
            return None
        mapping = properties[part]
        path.append(part)
        properties = mapping.get("properties")
    return FieldSpec(tuple(path), field_type(mapping or {}))


def values_at(source: dict, path: tuple[str, ...]) -> list[Any]:
    """Every non-null value at `path`, looking through arrays (of objects, too)."""
    if len(path) == 1:  # top-level fields, the common case
        value = source.get(path[0])
        if isinstance(value, list):
            return [v for v in value if v is not None]
        return [] if value is None else [value]
    current: list[Any] = [source]
    for key in path:
        found: list[Any] = []
        for item in current:
            if isinstance(item, dict):
                value = item.get(key)
                if isinstance(value, list):
                    found.extend(v for v in value if v is not None)
                elif value is not None:
                    found.append(value)
        current = found
    return current


def indexed_values(spec: FieldSpec, source: dict) -> list[Any]:
    """What the inverted index holds for this field of this document: tokens for text, typed values otherwise."""
    raw = values_at(source, spec.path)
    if spec.type in TEXT_TYPES:
        return [token for value in raw for token in tokens(coerce(spec.type, value))]
    indexed = []
    for value in raw:
        try:
            indexed.append(coerce(spec.type, value))
        except COERCE_ERRORS:
            pass
    return indexed


# ---------------------------------------------------------------- mappings and documents


def check_mapping_types(properties: dict, prefix: str = "") -> None:
    """Refuse a mapping with a type Elasticsearch (or this emulator) does not know."""
    for name, mapping in properties.items():
        declared = mapping.get("type")
        if declared is not None and declared not in KNOWN_TYPES:
            reason = f"No handler for type [{declared}] declared on field [{prefix}{name}]"
            raise EsError(400, "mapper_parsing_exception", reason)
        check_mapping_types(mapping.get("properties", {}), f"{prefix}{name}.")


def merge_mappings(existing: dict, update: dict, prefix: str = "") -> dict:
    """`existing` with `update` added (PUT _mapping, templates): new fields join, changing a field's type is refused."""
    merged = {**existing, **{k: v for k, v in update.items() if k != "properties"}}
    properties = dict(existing.get("properties", {}))
    for name, mapping in update.get("properties", {}).items():
        old = properties.get(name)
        if old is None:
            properties[name] = mapping
        elif field_type(old) != field_type(mapping):
            raise EsError(
                400,
                "illegal_argument_exception",
                f"mapper [{prefix}{name}] cannot be changed from type [{field_type(old)}] to [{field_type(mapping)}]",
            )
        else:
            properties[name] = merge_mappings(old, mapping, f"{prefix}{name}.")
    if properties or "properties" in existing or "properties" in update:
        merged["properties"] = properties
    return merged


def _dynamic_mode(value: Any, inherited: str) -> str:
    if value is None:
        return inherited
    return {True: "true", False: "false"}.get(value, str(value))


def infer_mapping(value: Any) -> dict | None:
    """The mapping dynamic mapping gives a new field with this value (None: nothing to map yet)."""
    if isinstance(value, list):
        return next((m for m in map(infer_mapping, value) if m is not None), None)
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "long"}
    if isinstance(value, float):
        return {"type": "float"}
    if isinstance(value, dict):
        inner = {k: m for k, m in ((k, infer_mapping(v)) for k, v in value.items()) if m is not None}
        return {"properties": inner}
    if isinstance(value, str):
        if _ISO_DATE.fullmatch(value.strip()):
            return {"type": "date"}
        return {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
    return None


def check_document(source: Any, mappings: dict, doc_id: str) -> dict:
    """Raise the EsError Elasticsearch would answer for `source`; return the mapping update it triggers
    (`{"properties": {...}}`, empty when no new field appears)."""
    if not isinstance(source, dict):
        raise EsError(400, "document_parsing_exception", "[1:1] failed to parse: source is not an object")
    added: dict = {}
    dynamic = _dynamic_mode(mappings.get("dynamic"), "true")
    _check_object(source, mappings.get("properties", {}), dynamic, "", doc_id, added)
    return {"properties": added} if added else {}


def _check_object(obj: dict, properties: dict, dynamic: str, prefix: str, doc_id: str, added: dict) -> None:
    for key, value in obj.items():
        mapping = properties.get(key)
        if mapping is None:
            if value is None or dynamic == "false":
                continue
            if dynamic == "strict":
                within = prefix[:-1] or "_doc"
                raise EsError(
                    400,
                    "strict_dynamic_mapping_exception",
                    f"mapping set to strict, dynamic introduction of [{key}] within [{within}] is not allowed",
                )
            inferred = infer_mapping(value)
            if inferred is not None:
                added[key] = inferred
            continue
        if mapping.get("enabled") is False:
            continue
        kind = field_type(mapping)
        for item in value if isinstance(value, list) else (value,):
            if item is None or (kind in STRING_TYPES and type(item) is str):  # the common case, kept cheap
                continue
            if kind in OBJECT_TYPES:
                if not isinstance(item, dict):
                    raise EsError(
                        400,
                        "document_parsing_exception",
                        f"object mapping for [{prefix}{key}] tried to parse field [{key}] as object, "
                        "but found a concrete value",
                    )
                inner_added: dict = {}
                inner_dynamic = _dynamic_mode(mapping.get("dynamic"), dynamic)
                inner_properties = mapping.get("properties", {})
                _check_object(item, inner_properties, inner_dynamic, f"{prefix}{key}.", doc_id, inner_added)
                if inner_added:
                    added.setdefault(key, {"properties": {}})["properties"].update(inner_added)
                continue
            try:
                coerce(kind, item)
            except COERCE_ERRORS as error:
                raise EsError(
                    400,
                    "document_parsing_exception",
                    f"failed to parse field [{prefix}{key}] of type [{kind}] in document with id '{doc_id}'. "
                    f"Preview of field's value: '{item}'",
                    caused_by={"type": "illegal_argument_exception", "reason": str(error)},
                ) from None


# ---------------------------------------------------------------- queries


def compile_query(query: dict | None, mappings: dict) -> Matcher:
    """A predicate for one index's documents; EsError(400) for what Elasticsearch would refuse to parse."""
    if not query:
        return _match_all
    if not isinstance(query, dict) or len(query) != 1:
        raise bad_query("query malformed, must start with start_object and have exactly one query")
    ((kind, body),) = query.items()
    builder = _QUERIES.get(kind)
    if builder is None:
        raise bad_query(f"unknown query [{kind}] (or not supported by the emulator)")
    return builder(body, mappings)


def _match_all(_id: str, _source: dict) -> bool:
    return True


def _match_none(_id: str, _source: dict) -> bool:
    return False


def _single_field(body: Any, kind: str, value_key: str = "value") -> tuple[str, Any, dict]:
    """(field, value, options) from `{field: value}` or `{field: {value_key: value, ...}}`."""
    fields = {k: v for k, v in body.items() if k not in ("boost", "_name")} if isinstance(body, dict) else {}
    if len(fields) != 1:
        raise bad_query(f"[{kind}] query doesn't support multiple fields, found {sorted(fields)}")
    ((name, value),) = fields.items()
    if isinstance(value, dict):
        return name, value.get(value_key), value
    return name, value, {}


def _query_value(spec: FieldSpec, value: Any) -> Any:
    if spec.type in TEXT_TYPES:
        return str(value)
    try:
        return coerce(spec.type, value)
    except COERCE_ERRORS as error:
        raise bad_query(f"failed to create query: {error}", "query_shard_exception") from None


def _term(body: Any, mappings: dict) -> Matcher:
    name, value, _ = _single_field(body, "term")
    spec = resolve_field(mappings, name)
    if spec is None:
        return _match_none
    target = _query_value(spec, value)
    return lambda _id, source: target in indexed_values(spec, source)


def _terms(body: Any, mappings: dict) -> Matcher:
    name, values, _ = _single_field(body, "terms")
    if not isinstance(values, list):
        raise bad_query("[terms] query requires an array of values")
    spec = resolve_field(mappings, name)
    if spec is None:
        return _match_none
    targets = {_query_value(spec, value) for value in values}
    return lambda _id, source: any(v in targets for v in indexed_values(spec, source))


def _clauses(body: dict, key: str, mappings: dict) -> list[Matcher]:
    clauses = body.get(key, [])
    return [compile_query(clause, mappings) for clause in (clauses if isinstance(clauses, list) else [clauses])]


def _minimum_should_match(setting: Any, optional: int) -> int:
    text = str(setting).strip()
    if text.endswith("%"):
        percent = int(text[:-1])
        count = optional * abs(percent) // 100
        return count if percent >= 0 else optional - count
    number = int(text)
    return number if number >= 0 else optional + number


def _bool(body: Any, mappings: dict) -> Matcher:
    if not isinstance(body, dict):
        raise bad_query("[bool] query malformed")
    required = _clauses(body, "must", mappings) + _clauses(body, "filter", mappings)
    excluded = _clauses(body, "must_not", mappings)
    optional = _clauses(body, "should", mappings)
    default = 0 if required else 1
    needed = min(len(optional), _minimum_should_match(body.get("minimum_should_match", default), len(optional)))

    def matches(doc_id: str, source: dict) -> bool:
        if not all(clause(doc_id, source) for clause in required):
            return False
        if any(clause(doc_id, source) for clause in excluded):
            return False
        return needed <= 0 or sum(clause(doc_id, source) for clause in optional) >= needed

    return matches


_QUERIES: dict[str, Callable[[Any, dict], Matcher]] = {
    "match_all": lambda body, mappings: _match_all,
    "match_none": lambda body, mappings: _match_none,
    "term": _term,
    "terms": _terms,
    "bool": _bool,
}


# ---------------------------------------------------------------- aggregations


def aggregate(aggs: dict, docs: list[MappedDoc]) -> dict:
    """`aggregations` for `aggs` over the matching documents: `terms`, with sub-aggregations."""
    results = {}
    for name, spec in aggs.items():
        kinds = [k for k in spec if k not in ("aggs", "aggregations", "meta")]
        if len(kinds) != 1:
            raise bad_query(f"Expected exactly one aggregation type for [{name}], found {kinds}")
        if kinds[0] != "terms":
            raise bad_query(f"Unknown aggregation type [{kinds[0]}] (or not supported by the emulator)")
        options = spec["terms"]
        sub_aggs = spec.get("aggs") or spec.get("aggregations")
        results[name] = _terms_agg(options.get("field", ""), options, sub_aggs, docs)
    return results


def _is_date(field: str, docs: list[MappedDoc]) -> bool:
    return any((spec := resolve_field(m, field)) is not None and spec.type == "date" for m, _ in docs[:1])


def _values_per_doc(field: str, docs: list[MappedDoc], purpose: str) -> list[list[Any]]:
    """The indexed values of `field` in each document (in order), refusing text fields as Elasticsearch does."""
    specs: dict[int, FieldSpec | None] = {}  # per index mapping, looked up once
    per_doc = []
    for mappings, source in docs:
        if id(mappings) not in specs:
            spec = specs[id(mappings)] = resolve_field(mappings, field)
            if spec is not None and spec.type in TEXT_TYPES:
                raise bad_query(
                    f"Fielddata is disabled on [{field}] in [{purpose}]. Text fields are not optimised for operations "
                    "that require per-document field data like aggregations and sorting; use a keyword field instead.",
                    "illegal_argument_exception",
                )
        spec = specs[id(mappings)]
        per_doc.append(indexed_values(spec, source) if spec is not None else [])
    return per_doc


def _terms_agg(field: str, options: dict, sub_aggs: dict | None, docs: list[MappedDoc]) -> dict:
    counts: Counter = Counter()
    members: dict[Any, list[MappedDoc]] = {}
    for doc, values in zip(docs, _values_per_doc(field, docs, "terms")):
        for value in set(values):
            counts[value] += 1
            if sub_aggs:
                members.setdefault(value, []).append(doc)
    order = options.get("order", {"_count": "desc"})
    ((order_by, direction),) = (order[0] if isinstance(order, list) else order).items()
    ranked = sorted(counts.items(), key=lambda kv: (kv[0],))
    if order_by == "_count":
        ranked.sort(key=lambda kv: kv[1], reverse=direction == "desc")
    elif direction == "desc":
        ranked.reverse()
    size = int(options.get("size", 10))
    is_date = _is_date(field, docs)
    buckets = []
    for key, count in ranked[:size]:
        bucket: dict[str, Any] = {"key": int(key) if isinstance(key, bool) else key, "doc_count": count}
        if isinstance(key, bool):
            bucket["key_as_string"] = "true" if key else "false"
        elif is_date:
            bucket["key_as_string"] = format_date_millis(key)
        if sub_aggs:
            bucket.update(aggregate(sub_aggs, members[key]))
        buckets.append(bucket)
    other = sum(count for _, count in ranked[size:])
    return {"doc_count_error_upper_bound": 0, "sum_other_doc_count": other, "buckets": buckets}
