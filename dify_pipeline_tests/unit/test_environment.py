"""The environment model: every refused value with its exact message, secrets never shown, and the documented
variables (.env.example, README) exactly those the model reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from dotenv import dotenv_values

from dify_pipeline.environment import VARIABLES, ConfigurationError, read_environment
from dify_pipeline_tests.configuration import LOADABLE_ENVIRONMENT

REPO = Path(__file__).resolve().parents[2]
GOOD = LOADABLE_ENVIRONMENT
DRIVERS = ("mysql+pymysql:// (PyMySQL, installed with the package) or mysql+mysqldb:// "
           "(mysqlclient: pip install 'dify_pipeline[mysql]')")

# (variable, value, the one problem reported). The first ones are the mistakes the issue met.
BAD_SETTINGS = [
    ("OUTPUT_PARQUET_URL", " s3://bucket/prefix",
     "OUTPUT_PARQUET_URL=' s3://bucket/prefix': starts or ends with whitespace; "
     "e.g. OUTPUT_PARQUET_URL=s3://analytics/dify/tickets_enriched"),
    ("OUTPUT_PARQUET_URL", "out/parquet",
     "OUTPUT_PARQUET_URL='out/parquet': not an absolute path (nor s3://bucket/prefix or file:///absolute/folder); "
     "e.g. OUTPUT_PARQUET_URL=s3://analytics/dify/tickets_enriched"),
    ("OUTPUT_PARQUET_URL", "file://out/parquet",
     "OUTPUT_PARQUET_URL='file://out/parquet': a file:// URL names an absolute path: file:///absolute/folder; "
     "e.g. OUTPUT_PARQUET_URL=s3://analytics/dify/tickets_enriched"),
    ("OUTPUT_PARQUET_URL", "gs://bucket/prefix",
     "OUTPUT_PARQUET_URL='gs://bucket/prefix': gs:// is not supported: use s3://bucket/prefix or an absolute path; "
     "e.g. OUTPUT_PARQUET_URL=s3://analytics/dify/tickets_enriched"),
    ("OUTPUT_PARQUET_URL", "s3:///prefix",
     "OUTPUT_PARQUET_URL='s3:///prefix': an S3 URL names its bucket: s3://bucket/prefix; "
     "e.g. OUTPUT_PARQUET_URL=s3://analytics/dify/tickets_enriched"),
    ("PIPELINE_STORAGE_URL", "stages",
     "PIPELINE_STORAGE_URL='stages': not an absolute path (nor s3://bucket/prefix or file:///absolute/folder); "
     "e.g. PIPELINE_STORAGE_URL=s3://analytics/dify/stages"),
    ("DIFY_MAX_CONCURRENCY", "abc", "DIFY_MAX_CONCURRENCY='abc': not a whole number; e.g. DIFY_MAX_CONCURRENCY=16"),
    ("DIFY_MAX_CONCURRENCY", "0", "DIFY_MAX_CONCURRENCY='0': must be at least 1; e.g. DIFY_MAX_CONCURRENCY=16"),
    ("DIFY_MAX_CONCURRENCY", "-4", "DIFY_MAX_CONCURRENCY='-4': must be at least 1; e.g. DIFY_MAX_CONCURRENCY=16"),
    ("DIFY_MAX_CONCURRENCY", "5000", "DIFY_MAX_CONCURRENCY='5000': must be at most 1000; e.g. DIFY_MAX_CONCURRENCY=16"),
    ("DIFY_REQUESTS_PER_MINUTE", "0",
     "DIFY_REQUESTS_PER_MINUTE='0': must be at least 1; e.g. DIFY_REQUESTS_PER_MINUTE=600 (or empty: unlimited)"),
    ("DIFY_REQUESTS_PER_MINUTE", "1.5",
     "DIFY_REQUESTS_PER_MINUTE='1.5': not a whole number; e.g. DIFY_REQUESTS_PER_MINUTE=600 (or empty: unlimited)"),
    ("PIPELINE_TIMEZONE", "Mars/Base",
     "PIPELINE_TIMEZONE='Mars/Base': not a time zone of the IANA database (Area/City, or UTC); "
     "e.g. PIPELINE_TIMEZONE=Asia/Shanghai"),
    ("SOURCE_TIMEZONE", "GMT+8",
     "SOURCE_TIMEZONE='GMT+8': not a time zone of the IANA database (Area/City, or UTC); "
     "e.g. SOURCE_TIMEZONE=Asia/Shanghai"),
    ("SOURCE_DATABASE_URL", "mysql://etl:db-pw@db.internal/support",
     f"SOURCE_DATABASE_URL='mysql://etl:***@db.internal/support': name the driver: {DRIVERS}; "
     "e.g. SOURCE_DATABASE_URL=mysql+pymysql://etl_reader:change-me@db.internal:3306/support"),
    ("SOURCE_DATABASE_URL", "mysq+pymysql://etl:db-pw@db/support",
     "SOURCE_DATABASE_URL='mysq+pymysql://etl:***@db/support': unknown database 'mysq+pymysql' "
     "(e.g. mysql+pymysql, postgresql, sqlite); "
     "e.g. SOURCE_DATABASE_URL=mysql+pymysql://etl_reader:change-me@db.internal:3306/support"),
    ("SOURCE_DATABASE_URL", "mysql+pymysql://etl:db-pw@db.internal",
     "SOURCE_DATABASE_URL='mysql+pymysql://etl:***@db.internal': the URL needs a host and a database: "
     "dialect+driver://user:password@host:port/database; "
     "e.g. SOURCE_DATABASE_URL=mysql+pymysql://etl_reader:change-me@db.internal:3306/support"),
    ("RESULT_CACHE_URL", "postgres://cache:pw/with@slashes@pg.internal:5432/cache",
     "RESULT_CACHE_URL='postgres://cache:***@pg.internal:5432/cache': unknown database 'postgres' "
     "(e.g. mysql+pymysql, postgresql, sqlite); "
     "e.g. RESULT_CACHE_URL=postgresql://dify_pipeline:change-me@pg.internal:5432/dify_cache"),
    ("RESULT_CACHE_URL", "postgresql://cache:cache-pw@pg.internal:54x2/cache",
     "RESULT_CACHE_URL='postgresql://cache:***@pg.internal:54x2/cache': not a SQLAlchemy URL "
     "(dialect+driver://user:password@host:port/database); "
     "e.g. RESULT_CACHE_URL=postgresql://dify_pipeline:change-me@pg.internal:5432/dify_cache"),
    ("RESULT_CACHE_URL", "postgresql+pg8000://cache:cache-pw@pg.internal/cache",
     "RESULT_CACHE_URL='postgresql+pg8000://cache:***@pg.internal/cache': the driver 'pg8000' of "
     "postgresql+pg8000:// is not installed; "
     "e.g. RESULT_CACHE_URL=postgresql://dify_pipeline:change-me@pg.internal:5432/dify_cache"),
    ("RESULT_CACHE_URL", "sqlite:///cache.sqlite",
     "RESULT_CACHE_URL='sqlite:///cache.sqlite': a SQLite file needs an absolute path: "
     "sqlite:////absolute/path/file.sqlite; "
     "e.g. RESULT_CACHE_URL=postgresql://dify_pipeline:change-me@pg.internal:5432/dify_cache"),
    ("SOURCE_TABLE", "tickets;drop",
     "SOURCE_TABLE='tickets;drop': not a plain SQL identifier (letters, digits and underscores); "
     "e.g. SOURCE_TABLE=tickets"),
    ("PIPELINE_START_DATE", "2026-1-1",
     "PIPELINE_START_DATE='2026-1-1': not a date written YYYY-MM-DD; e.g. PIPELINE_START_DATE=2026-01-01"),
    ("PIPELINE_START_DATE", "2026-02-30",
     "PIPELINE_START_DATE='2026-02-30': not a date written YYYY-MM-DD; e.g. PIPELINE_START_DATE=2026-01-01"),
    ("SCHEDULE_HOUR", "24", "SCHEDULE_HOUR='24': must be at most 23; e.g. SCHEDULE_HOUR=2"),
    ("SCHEDULE_HOUR", "-1", "SCHEDULE_HOUR='-1': must be at least 0; e.g. SCHEDULE_HOUR=2"),
    ("SCHEDULE_MINUTE", "60", "SCHEDULE_MINUTE='60': must be at most 59; e.g. SCHEDULE_MINUTE=0"),
    ("DIFY_APP_MODE", "agent",
     "DIFY_APP_MODE='agent': must be 'workflow', 'completion' or 'chat'; e.g. DIFY_APP_MODE=workflow"),
    ("DIFY_RESPONSE_MODE", "stream",
     "DIFY_RESPONSE_MODE='stream': must be 'blocking' or 'streaming'; e.g. DIFY_RESPONSE_MODE=streaming"),
    ("DIFY_BASE_URL", "https://api.dify.ai",
     "DIFY_BASE_URL='https://api.dify.ai': Dify's Service API is served under /v1: the URL ends with /v1; "
     "e.g. DIFY_BASE_URL=https://api.dify.ai/v1"),
    ("DIFY_BASE_URL", "api.dify.ai/v1",
     "DIFY_BASE_URL='api.dify.ai/v1': not an absolute http:// or https:// URL; "
     "e.g. DIFY_BASE_URL=https://api.dify.ai/v1"),
    ("DIFY_API_KEY", "app-key with a space",
     "DIFY_API_KEY=(secret, not shown): contains whitespace (a line break or space pasted with it?); "
     "e.g. DIFY_API_KEY=app-xxxxxxxxxxxxxxxx"),
    ("DIFY_API_KEY", "app-key\n",
     "DIFY_API_KEY=(secret, not shown): starts or ends with whitespace; e.g. DIFY_API_KEY=app-xxxxxxxxxxxxxxxx"),
    ("DIFY_CA_FILE", "/no/such/ca.pem",
     "DIFY_CA_FILE='/no/such/ca.pem': not an existing file given by its absolute path; "
     "e.g. DIFY_CA_FILE=/etc/ssl/private-ca.pem"),
    ("ELASTICSEARCH_URL", "es.internal:9200",
     "ELASTICSEARCH_URL='es.internal:9200': not an absolute http:// or https:// URL; "
     "e.g. ELASTICSEARCH_URL=https://es.internal:9200"),
    ("ELASTICSEARCH_URL", "https://elastic:es-pw@es.internal:92000",
     "ELASTICSEARCH_URL='https://elastic:***@es.internal:92000': the port is not a number from 0 to 65535; "
     "e.g. ELASTICSEARCH_URL=https://es.internal:9200"),
    ("ELASTICSEARCH_INDEX", "Tickets",
     "ELASTICSEARCH_INDEX='Tickets': not an Elasticsearch index name (lowercase, no spaces or \\/*?\"<>|,#:, "
     "not starting with -, _ or +); e.g. ELASTICSEARCH_INDEX=tickets_enriched"),
    ("S3_ENDPOINT_URL", "minio:9000",
     "S3_ENDPOINT_URL='minio:9000': not an absolute http:// or https:// URL; "
     "e.g. S3_ENDPOINT_URL=http://minio.internal:9000"),
    ("S3_ADDRESSING_STYLE", "host",
     "S3_ADDRESSING_STYLE='host': must be 'auto', 'path' or 'virtual'; e.g. S3_ADDRESSING_STYLE=auto"),
    ("RESULT_CACHE_ENABLED", "maybe",
     "RESULT_CACHE_ENABLED='maybe': not true or false; e.g. RESULT_CACHE_ENABLED=true"),
    ("DAGSTER_HOME", "dagster_home",
     "DAGSTER_HOME='dagster_home': not an absolute path; e.g. DAGSTER_HOME=/opt/dagster/home"),
    ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE",
     "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together: set both, or neither "
     "(then a profile or an instance role gives the credentials)"),
    ("ELASTICSEARCH_PASSWORD", "es-pw",
     "ELASTICSEARCH_USERNAME and ELASTICSEARCH_PASSWORD go together (basic auth): set both, or neither"),
    ("SEARCH_ENGINE", "solr",
     "SEARCH_ENGINE='solr': must be 'elasticsearch' or 'opensearch'; e.g. SEARCH_ENGINE=elasticsearch"),
    ("OPENSEARCH_AUTH", "iam", "OPENSEARCH_AUTH='iam': must be 'basic' or 'sigv4'; e.g. OPENSEARCH_AUTH=sigv4"),
    ("OPENSEARCH_AUTH", "sigv4",
     "OPENSEARCH_AUTH=sigv4 needs SEARCH_ENGINE=opensearch: Elasticsearch has no AWS signing"),
]


@pytest.mark.parametrize("name, value, message", BAD_SETTINGS, ids=[f"{n}={v!r}" for n, v, _ in BAD_SETTINGS])
def test_a_wrong_value_is_refused_naming_the_variable_the_problem_and_a_good_value(name, value, message):
    with pytest.raises(ConfigurationError) as raised:
        read_environment({**GOOD, name: value})
    assert raised.value.problems == [message]
    assert message in str(raised.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigurationError) as raised:
        read_environment({**GOOD, "DIFY_MAX_CONCURRENCY": "abc", "PIPELINE_TIMEZONE": "Mars/Base",
                          "SCHEDULE_HOUR": "25"})
    named = [problem.split("=")[0] for problem in raised.value.problems]
    assert named == ["PIPELINE_TIMEZONE", "SCHEDULE_HOUR", "DIFY_MAX_CONCURRENCY"]
    assert str(raised.value).startswith("dify_pipeline cannot load: 3 problems in the environment (see .env.example)\n")


def test_required_variables_missing_are_each_named_with_an_example():
    environment = {"DAGSTER_HOME": "/opt/dagster/home"}
    with pytest.raises(ConfigurationError) as raised:
        read_environment(environment)
    assert raised.value.problems == [
        "SOURCE_DATABASE_URL is not set: "
        "e.g. SOURCE_DATABASE_URL=mysql+pymysql://etl_reader:change-me@db.internal:3306/support",
        "DIFY_BASE_URL is not set: e.g. DIFY_BASE_URL=https://api.dify.ai/v1",
        "DIFY_API_KEY is not set: e.g. DIFY_API_KEY=app-xxxxxxxxxxxxxxxx",
        "OUTPUT_PARQUET_URL is not set: e.g. OUTPUT_PARQUET_URL=s3://analytics/dify/tickets_enriched",
        "ELASTICSEARCH_URL is not set: e.g. ELASTICSEARCH_URL=https://es.internal:9200",
    ]
    assert read_environment(environment, require=False).pipeline_timezone == "UTC"  # importing a module needs none


def test_the_default_state_folder_needs_dagster_home():
    without_home = {k: v for k, v in GOOD.items() if k != "DAGSTER_HOME"}
    with pytest.raises(ConfigurationError) as raised:
        read_environment(without_home)
    assert [p.split(" ")[0] for p in raised.value.problems] == ["PIPELINE_STORAGE_URL", "RESULT_CACHE_URL"]
    assert read_environment({**without_home, "PIPELINE_STORAGE_URL": "/var/stages",
                             "RESULT_CACHE_URL": "sqlite:////var/cache.sqlite"}).state_dir is None


def test_a_problem_found_while_importing_also_lists_the_missing_variables():
    with pytest.raises(ConfigurationError) as raised:
        read_environment({"PIPELINE_TIMEZONE": "Mars/Base", "DAGSTER_HOME": "/opt/dagster/home"}, require=False)
    assert raised.value.problems[0].startswith("PIPELINE_TIMEZONE=")
    assert "SOURCE_DATABASE_URL is not set" in raised.value.problems[1]


@pytest.mark.parametrize("name, value", [
    ("SOURCE_DATABASE_URL", "mysql://etl:s3cr3t-pw@db/support"),
    ("SOURCE_DATABASE_URL", " mysql+pymysql://etl:s3cr3t-pw@db/support"),
    ("RESULT_CACHE_URL", "postgresql://cache:s3cr3t-pw@pg:5x/cache"),
    ("RESULT_CACHE_URL", "postgresql://cache:s3cr3t/p@w@pg:5x/cache"),
    ("DIFY_API_KEY", "app-s3cr3t key"),
    ("ELASTICSEARCH_API_KEY", "s3cr3t key"),
    ("AWS_SECRET_ACCESS_KEY", "s3cr3t key"),
    ("ELASTICSEARCH_PASSWORD", " s3cr3t"),
    ("ELASTICSEARCH_URL", "https://elastic:s3cr3t@es.internal:9200?x=1"),
])
def test_a_refused_secret_is_never_shown(name, value):
    with pytest.raises(ConfigurationError) as raised:
        read_environment({**GOOD, "AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "x",
                          "ELASTICSEARCH_USERNAME": "elastic", "ELASTICSEARCH_PASSWORD": "x", name: value})
    assert raised.value.problems and "s3cr3t" not in str(raised.value) and "s3cr3t" not in repr(raised.value)
    assert raised.value.__cause__ is None and raised.value.__context__ is None  # no pydantic error with the input


def test_values_are_typed_and_normalized():
    environment = read_environment({**GOOD, "OUTPUT_PARQUET_URL": "file:///data/out", "DIFY_MAX_CONCURRENCY": "32",
                                    "DIFY_REQUESTS_PER_MINUTE": "", "RESULT_CACHE_ENABLED": "false"})
    assert environment.output_parquet_url == "/data/out"  # as ObjectStorage takes a local folder
    assert environment.dify_max_concurrency == 32 and environment.dify_requests_per_minute is None
    assert environment.result_cache_enabled is False
    assert environment.source_timezone is None and environment.pipeline_timezone == "UTC"
    assert environment.state_dir == Path("/opt/dagster/home/dify_pipeline")


def test_an_api_key_is_for_elasticsearch_only():
    with pytest.raises(ConfigurationError) as raised:
        read_environment({**GOOD, "SEARCH_ENGINE": "opensearch", "ELASTICSEARCH_API_KEY": "bXlfaWQ6bXlfa2V5"})
    assert raised.value.problems == ["ELASTICSEARCH_API_KEY is for Elasticsearch; OpenSearch takes basic auth "
                                     "(ELASTICSEARCH_USERNAME and ELASTICSEARCH_PASSWORD) or OPENSEARCH_AUTH=sigv4"]
    read_environment({**GOOD, "SEARCH_ENGINE": "opensearch", "OPENSEARCH_AUTH": "sigv4"})


def test_mysqlclient_and_sqlite_urls_are_accepted():
    read_environment({**GOOD, "SOURCE_DATABASE_URL": "mysql+mysqldb://etl:pw@db.internal:3306/support",
                      "RESULT_CACHE_URL": "sqlite:////var/lib/dify_pipeline/cache.sqlite"})


# -- the documented variables ---------------------------------------------------------------------------------

def instance_variables() -> set[str]:
    """The variables dagster.yaml reads (`env: NAME`): documented beside the package's own."""
    found = set()

    def walk(node):
        if isinstance(node, dict):
            found.update(v for k, v in node.items() if k == "env")
            for value in node.values():
                walk(value)

    walk(yaml.safe_load((REPO / "dagster.yaml").read_text()))
    return found


def test_env_example_lists_exactly_the_variables_the_package_and_the_instance_read():
    listed = re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (REPO / ".env.example").read_text(), re.MULTILINE)
    assert len(listed) == len(set(listed))
    assert set(listed) == set(VARIABLES) | instance_variables()


def test_the_readme_configuration_table_lists_exactly_the_same_variables():
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("### Configuration"):].split("\n\n")[1]
    first_cells = [row.split("|")[1] for row in table.splitlines() if row.startswith("| `")]
    documented = [name for cell in first_cells for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cell)]
    assert len(documented) == len(set(documented))
    assert set(documented) == set(VARIABLES) | instance_variables()


def test_the_example_configuration_loads():
    """.env.example as dagster dev reads it (python-dotenv), with the CA files it comments out."""
    example = {k: v for k, v in dotenv_values(REPO / ".env.example").items() if v is not None}
    environment = read_environment(example)
    assert environment.source_database_url.startswith("mysql+pymysql://")
    assert environment.pipeline_timezone == "Asia/Shanghai" and environment.dify_requests_per_minute is None
