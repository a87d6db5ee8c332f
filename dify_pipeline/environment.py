"""Every environment variable the package reads, in one typed model, validated when the code location loads.

A wrong value stops the load with one message that names each variable, says what is wrong with it and gives
a good value, before any step runs and so before anything is paid. Secrets are checked without being shown
(URLs without their password, keys not at all), and resources still receive them as `EnvVar`s, which Dagster
resolves at run time and never stores.

Adding a variable is one line here: a field whose alias is the variable's name, with an example of a good
value. A test keeps `.env.example` and the README's configuration table listing exactly these fields.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from dify_pipeline.resources.dify import DifyResource
from dify_pipeline.resources.search import SearchCluster
from dify_pipeline.resources.source_query import validate_identifier
from dify_pipeline.resources.storage import ObjectStorage, storage_url


class ConfigurationError(ValueError):
    """The environment cannot run the pipeline; `problems` holds one line per variable to fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        super().__init__(f"dify_pipeline cannot load: {count} in the environment (see .env.example)\n  "
                         + "\n  ".join(problems))


# -- the rules for a value, each raising ValueError with what is wrong ------------------------------------------

def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("not a time zone of the IANA database (Area/City, or UTC)") from None
    return value


def _day(value: str) -> str:
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError
        datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        raise ValueError("not a date written YYYY-MM-DD") from None
    return value


def _identifier(value: str) -> str:
    try:
        return validate_identifier(value, "table")
    except ValueError:
        raise ValueError("not a plain SQL identifier (letters, digits and underscores)") from None


def _database_url(value: str) -> str:
    """A SQLAlchemy URL whose dialect and driver are installed; a SQLite file by its absolute path."""
    try:
        url = sa.make_url(value)
    except (sa.exc.ArgumentError, ValueError):
        raise ValueError("not a SQLAlchemy URL (dialect+driver://user:password@host:port/database)") from None
    if url.drivername == "mysql":  # SQLAlchemy's default driver for mysql:// is mysqlclient, an optional extra
        raise ValueError("name the driver: mysql+pymysql:// (PyMySQL, installed with the package) or mysql+mysqldb:// "
                         "(mysqlclient: pip install 'dify_pipeline[mysql]')")
    try:
        dialect = url.get_dialect()
    except sa.exc.NoSuchModuleError:
        raise ValueError(f"unknown database {url.drivername!r} (e.g. mysql+pymysql, postgresql, sqlite)") from None
    try:
        dialect.import_dbapi()
    except ImportError:
        hint = " (pip install 'dify_pipeline[mysql]', or use mysql+pymysql://)" if dialect.driver == "mysqldb" else ""
        raise ValueError(f"the driver {dialect.driver!r} of {url.drivername}:// is not installed{hint}") from None
    if url.get_backend_name() == "sqlite":
        if not url.database or not Path(url.database).is_absolute():
            raise ValueError("a SQLite file needs an absolute path: sqlite:////absolute/path/file.sqlite")
    elif not url.host or not url.database:
        raise ValueError("the URL needs a host and a database: dialect+driver://user:password@host:port/database")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError("the port is not a number from 0 to 65535") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an absolute http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ValueError("a base URL has no ?query or #fragment")
    return value


def _dify_api_url(value: str) -> str:
    if not _http_url(value).rstrip("/").endswith("/v1"):
        raise ValueError("Dify's Service API is served under /v1: the URL ends with /v1")
    return value


def _index_name(value: str) -> str:
    # Elasticsearch's rules for index and alias names; the package appends -v<N> for the physical index.
    if (value != value.lower() or value in (".", "..") or value.startswith(("-", "_", "+"))
            or re.search(r'[\\/*?"<>| ,#:]', value) or len(value.encode()) > 240):
        raise ValueError("not an Elasticsearch index name (lowercase, no spaces or \\/*?\"<>|,#:, "
                         "not starting with -, _ or +)")
    return value


def _existing_file(value: str) -> str:
    if not Path(value).is_absolute() or not Path(value).is_file():
        raise ValueError("not an existing file given by its absolute path")
    return value


def _absolute_folder(value: str) -> str:
    if not Path(value).is_absolute():
        raise ValueError("not an absolute path")
    return value


def _one_word(value: str) -> str:
    if re.search(r"\s", value):
        raise ValueError("contains whitespace (a line break or space pasted with it?)")
    return value


def _like(resource: type, field: str) -> Any:
    """The type and bounds a resource declares for one of its fields: the variable obeys the same rule."""
    info = resource.model_fields[field]
    return Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation


TimeZone = Annotated[str, AfterValidator(_time_zone)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
StorageUrl = Annotated[str, AfterValidator(storage_url)]  # file:// and absolute paths come back as plain paths
DatabaseUrl = Annotated[str, AfterValidator(_database_url)]
OneWord = Annotated[str, AfterValidator(_one_word)]  # keys, regions
ExistingFile = Annotated[str, AfterValidator(_existing_file)]


def variable(
    name: str, example: str, default: Any = None, *, secret: bool = False, required: bool = False, **bounds: int
) -> Any:
    """A field read from the environment variable `name`; `example` is a good value, shown in error messages."""
    extra = {"secret": secret, "required": required}
    return Field(default, alias=name, examples=[example], json_schema_extra=extra, **bounds)


class PipelineEnvironment(BaseModel):
    """The deployment as its environment describes it. Unset variables (or set to "") take their default."""

    model_config = ConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True)

    # -- the source
    source_database_url: DatabaseUrl | None = variable(
        "SOURCE_DATABASE_URL", "mysql+pymysql://etl_reader:change-me@db.internal:3306/support",
        secret=True, required=True)
    source_table: Annotated[str, AfterValidator(_identifier)] = variable("SOURCE_TABLE", "tickets", "tickets")
    source_timezone: TimeZone | None = variable("SOURCE_TIMEZONE", "Asia/Shanghai")  # default: PIPELINE_TIMEZONE
    # -- partitions and schedule (read when the definitions are imported: they cannot change between runs)
    pipeline_timezone: TimeZone = variable("PIPELINE_TIMEZONE", "Asia/Shanghai", "UTC")
    pipeline_start_date: Annotated[str, AfterValidator(_day)] = variable(
        "PIPELINE_START_DATE", "2026-01-01", "2026-01-01")
    schedule_hour: int = variable("SCHEDULE_HOUR", "2", 2, ge=0, le=23)
    schedule_minute: int = variable("SCHEDULE_MINUTE", "0", 0, ge=0, le=59)
    published_by_hour: int = variable("PUBLISHED_BY_HOUR", "8", 8, ge=1, le=23)
    # -- Dify
    dify_base_url: Annotated[str, AfterValidator(_dify_api_url)] | None = variable(
        "DIFY_BASE_URL", "https://api.dify.ai/v1", required=True)
    dify_api_key: OneWord | None = variable("DIFY_API_KEY", "app-xxxxxxxxxxxxxxxx", secret=True, required=True)
    dify_app_mode: _like(DifyResource, "app_mode") | None = variable("DIFY_APP_MODE", "workflow")
    dify_response_mode: _like(DifyResource, "response_mode") | None = variable("DIFY_RESPONSE_MODE", "streaming")
    dify_max_concurrency: _like(DifyResource, "max_concurrency") | None = variable("DIFY_MAX_CONCURRENCY", "16")
    dify_requests_per_minute: _like(DifyResource, "requests_per_minute") = variable(
        "DIFY_REQUESTS_PER_MINUTE", "600 (or empty: unlimited)")
    dify_max_outage_seconds: _like(DifyResource, "max_outage_seconds") | None = variable(
        "DIFY_MAX_OUTAGE_SECONDS", "300")
    dify_keep_alive: bool | None = variable("DIFY_KEEP_ALIVE", "false")
    dify_connection_reuse_seconds: _like(DifyResource, "connection_reuse_seconds") | None = variable(
        "DIFY_CONNECTION_REUSE_SECONDS", "1")
    dify_ca_file: ExistingFile | None = variable("DIFY_CA_FILE", "/etc/ssl/private-ca.pem")
    # -- outputs
    output_parquet_url: StorageUrl | None = variable(
        "OUTPUT_PARQUET_URL", "s3://analytics/dify/tickets_enriched", required=True)
    s3_endpoint_url: HttpUrl | None = variable("S3_ENDPOINT_URL", "http://minio.internal:9000")
    s3_addressing_style: _like(ObjectStorage, "s3_addressing_style") | None = variable("S3_ADDRESSING_STYLE", "auto")
    aws_access_key_id: OneWord | None = variable("AWS_ACCESS_KEY_ID", "AKIAXXXXXXXXXXXXXXXX", secret=True)
    aws_secret_access_key: OneWord | None = variable("AWS_SECRET_ACCESS_KEY", "xxxxxxxxxxxxxxxxxxxx", secret=True)
    aws_region: OneWord | None = variable("AWS_REGION", "us-east-1")
    search_engine: _like(SearchCluster, "engine") | None = variable("SEARCH_ENGINE", "elasticsearch")
    elasticsearch_url: HttpUrl | None = variable("ELASTICSEARCH_URL", "https://es.internal:9200", required=True)
    elasticsearch_api_key: OneWord | None = variable("ELASTICSEARCH_API_KEY", "bXlfaWQ6bXlfa2V5", secret=True)
    elasticsearch_username: str | None = variable("ELASTICSEARCH_USERNAME", "dify_pipeline")
    elasticsearch_password: str | None = variable("ELASTICSEARCH_PASSWORD", "change-me", secret=True)
    elasticsearch_index: Annotated[str, AfterValidator(_index_name)] = variable(
        "ELASTICSEARCH_INDEX", "tickets_enriched", "tickets_enriched")
    elasticsearch_ca_file: ExistingFile | None = variable("ELASTICSEARCH_CA_FILE", "/etc/ssl/private-ca.pem")
    opensearch_auth: Literal["basic", "sigv4"] | None = variable("OPENSEARCH_AUTH", "sigv4")
    opensearch_aws_region: OneWord | None = variable("OPENSEARCH_AWS_REGION", "eu-west-1")
    # -- the pipeline's own state
    dagster_home: Annotated[str, AfterValidator(_absolute_folder)] | None = variable(
        "DAGSTER_HOME", "/opt/dagster/home")
    pipeline_storage_url: StorageUrl | None = variable("PIPELINE_STORAGE_URL", "s3://analytics/dify/stages")
    result_cache_url: DatabaseUrl | None = variable(
        "RESULT_CACHE_URL", "postgresql://dify_pipeline:change-me@pg.internal:5432/dify_cache", secret=True)
    result_cache_enabled: bool = variable("RESULT_CACHE_ENABLED", "true", True)

    @property
    def state_dir(self) -> Path | None:
        """Where the stages and the cache live when PIPELINE_STORAGE_URL / RESULT_CACHE_URL are not given."""
        return Path(self.dagster_home) / "dify_pipeline" if self.dagster_home else None


FIELDS_BY_VARIABLE = {field.alias: field for field in PipelineEnvironment.model_fields.values()}
VARIABLES = tuple(FIELDS_BY_VARIABLE)


def read_environment(environ: Mapping[str, str] | None = None, *, require: bool = True) -> PipelineEnvironment:
    """The validated environment (`os.environ` by default); raises ConfigurationError listing every problem.

    `require=False` accepts required variables that are unset (importing a module must not need a database URL),
    unless something else is wrong anyway: then the error lists those too, so one round of fixes is enough.
    """
    environ = os.environ if environ is None else environ
    present = {name: environ[name] for name in VARIABLES if environ.get(name, "") != ""}
    problems = [_problem(name, value, "starts or ends with whitespace")
                for name, value in present.items() if value != value.strip()]
    given = {name: value for name, value in present.items() if value == value.strip()}
    errors = []
    try:
        environment = PipelineEnvironment.model_validate(given)
    except ValidationError as error:
        environment, errors = None, error.errors()  # raised below, outside this block: no chained traceback
    problems += [_problem(str(e["loc"][0]), given[str(e["loc"][0])], _reason(e)) for e in errors]
    if environment is not None:
        problems += _inconsistencies(environment)
    if require or problems:
        problems += _missing(environment, present)
    if problems:
        raise ConfigurationError(problems)
    return environment


# What a contract's own variables hold: (contract field, rule, a good value).
_CONTRACT_VARIABLES = {
    "source.url_env": (_database_url, "mysql+pymysql://etl_reader:change-me@db.internal:3306/reviews", True),
    "app.base_url_env": (_dify_api_url, "https://api.dify.ai/v1", False),
    "app.api_key_env": (_one_word, "app-xxxxxxxxxxxxxxxx", True),
}


def check_contract_variables(contracts: Iterable[Any], environ: Mapping[str, str] | None = None) -> None:
    """The variables each enrichment contract names (source URL, Dify URL and key) are set and well-formed.

    Those the package reads itself (SOURCE_DATABASE_URL, DIFY_BASE_URL, DIFY_API_KEY) are read_environment's; the
    others are checked here, at load time, before anything runs. Raises ConfigurationError naming each variable
    and the contract field that names it; secret values are never shown.
    """
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    seen: set[str] = set()
    for contract in contracts:
        for field, (rule, example, secret) in _CONTRACT_VARIABLES.items():
            section, attribute = field.split(".")
            name = getattr(getattr(contract, section), attribute)
            if name in FIELDS_BY_VARIABLE or name in seen:
                continue
            seen.add(name)
            value = environ.get(name, "")
            where = f"(enrichment {contract.name!r}, {field})"
            if value == "":
                problems.append(f"{name} is not set {where}: e.g. {name}={example}")
                continue
            try:
                if value != value.strip():
                    raise ValueError("starts or ends with whitespace")
                rule(value)
            except ValueError as error:
                shown = "(secret, not shown)" if secret else repr(value)
                problems.append(f"{name}={shown} {where}: {error}; e.g. {name}={example}")
    if problems:
        raise ConfigurationError(problems)


def _missing(environment: PipelineEnvironment | None, present: Mapping[str, str]) -> list[str]:
    missing = [name for name, field in FIELDS_BY_VARIABLE.items()
               if field.json_schema_extra["required"] and name not in present]
    problems = [f"{name} is not set: {_example(name)}" for name in missing]
    if environment is not None and not environment.dagster_home:
        for name in ("PIPELINE_STORAGE_URL", "RESULT_CACHE_URL"):
            if name not in present:
                problems.append(f"{name} is not set, and its default lives under DAGSTER_HOME, which is not set "
                                f"either: set DAGSTER_HOME=/opt/dagster/home, or {_example(name)}")
    return problems


def _inconsistencies(environment: PipelineEnvironment) -> list[str]:
    problems = []
    if environment.published_by_hour <= environment.schedule_hour:
        problems.append(f"PUBLISHED_BY_HOUR={environment.published_by_hour} is not after SCHEDULE_HOUR="
                        f"{environment.schedule_hour}: yesterday would be due before its run starts; "
                        f"e.g. PUBLISHED_BY_HOUR={min(environment.schedule_hour + 6, 23)}")
    if bool(environment.aws_access_key_id) != bool(environment.aws_secret_access_key):
        problems.append("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together: set both, or neither "
                        "(then a profile or an instance role gives the credentials)")
    if bool(environment.elasticsearch_username) != bool(environment.elasticsearch_password):
        problems.append("ELASTICSEARCH_USERNAME and ELASTICSEARCH_PASSWORD go together (basic auth): "
                        "set both, or neither")
    if environment.elasticsearch_api_key and environment.elasticsearch_username:
        problems.append("ELASTICSEARCH_API_KEY and ELASTICSEARCH_USERNAME are both set: use the API key or basic auth")
    opensearch = environment.search_engine == "opensearch"
    if environment.opensearch_auth == "sigv4" and not opensearch:
        problems.append("OPENSEARCH_AUTH=sigv4 needs SEARCH_ENGINE=opensearch: Elasticsearch has no AWS signing")
    if opensearch and environment.elasticsearch_api_key:
        problems.append("ELASTICSEARCH_API_KEY is for Elasticsearch; OpenSearch takes basic auth "
                        "(ELASTICSEARCH_USERNAME and ELASTICSEARCH_PASSWORD) or OPENSEARCH_AUTH=sigv4")
    if opensearch and importlib.util.find_spec("opensearchpy") is None:
        problems.append("SEARCH_ENGINE=opensearch needs opensearch-py: pip install 'dify_pipeline[opensearch]'")
    return problems


def _problem(name: str, value: str, reason: str) -> str:
    return f"{name}={_shown(name, value)}: {reason}; {_example(name)}"


def _example(name: str) -> str:
    return f"e.g. {name}={FIELDS_BY_VARIABLE[name].examples[0]}"


def _shown(name: str, value: str) -> str:
    """The value as an error message may show it: a URL without its password, other secrets not at all."""
    if FIELDS_BY_VARIABLE[name].json_schema_extra["secret"] and not name.endswith("_URL"):
        return "(secret, not shown)"
    return repr(re.sub(r"(://[^/@:]*:).*@", r"\1***@", value))  # to the last @: a password may hold / or @


def _reason(error: Mapping) -> str:
    """pydantic's error in the words of someone setting a variable."""
    kind, context = error["type"], error.get("ctx") or {}
    if kind == "value_error":
        return str(context["error"])
    return {
        "int_parsing": "not a whole number",
        "greater_than_equal": f"must be at least {context.get('ge')}",
        "less_than_equal": f"must be at most {context.get('le')}",
        "literal_error": f"must be {context.get('expected')}",
        "bool_parsing": "not true or false",
    }.get(kind, error["msg"])
