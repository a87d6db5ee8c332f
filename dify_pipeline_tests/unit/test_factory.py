"""The factory: one contract's whole chain under names of its own, several side by side in one code location, and
the load refused, naming what to fix, when two would collide or a contract's variable is missing."""

from __future__ import annotations

import textwrap

import dagster as dg
import pytest

from dify_pipeline.components import DifyEnrichment
from dify_pipeline.contract import (
    TICKET_OUTPUTS,
    AppContract,
    ContractError,
    EnrichmentContract,
    SinksContract,
    SourceContract,
    tickets_contract,
)
from dify_pipeline.environment import ConfigurationError, check_contract_variables, read_environment
from dify_pipeline.factory import build_code_location, build_enrichment
from dify_pipeline_tests.configuration import LOADABLE_ENVIRONMENT

REVIEWS_ENV = {"REVIEWS_DATABASE_URL": "mysql+pymysql://reader:change-me@127.0.0.1:1/shop",
               "REVIEWS_DIFY_API_KEY": "app-reviews-key"}


def reviews_contract(**changes) -> EnrichmentContract:
    fields = dict(
        name="reviews", key_prefix=["shop"],
        source=SourceContract(url_env="REVIEWS_DATABASE_URL", table="reviews"),
        app=AppContract(api_key_env="REVIEWS_DIFY_API_KEY", mode="completion"), outputs=TICKET_OUTPUTS,
        sinks=SinksContract(parquet_prefix="reviews", index_alias="reviews_enriched"),
    )
    return EnrichmentContract(**{**fields, **changes})


@pytest.fixture
def environment(monkeypatch):
    for name, value in {**LOADABLE_ENVIRONMENT, **REVIEWS_ENV}.items():
        monkeypatch.setenv(name, value)
    return read_environment()


def tickets_beside_others() -> EnrichmentContract:
    return tickets_contract(sinks=SinksContract(parquet_prefix="tickets"))


def test_two_enrichments_have_their_own_keys_groups_jobs_schedules_sensors_pools_and_resources(environment):
    defs = build_code_location([tickets_beside_others(), reviews_contract()], environment)
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"raw_tickets", "ticket_shards", "enriched_tickets", "tickets_parquet"} <= keys
    assert {"shop/raw_reviews", "shop/clean_reviews", "shop/quarantined_reviews", "shop/review_shards",
            "shop/enriched_reviews", "shop/reviews_parquet", "shop/reviews_elasticsearch"} <= keys
    assert {graph.get(key).group_name for key in graph.get_all_asset_keys()} == {"tickets", "reviews"}
    assert {job.name for job in defs.resolve_all_job_defs()} >= {"daily_enrichment", "daily_reviews"}
    assert {s.name for s in defs.schedules} == {"daily_enrichment_schedule", "daily_reviews_schedule"}
    assert {s.name for s in defs.sensors} == {"published_by_deadline", "reviews_published_by_deadline"}
    pools = {key.path[-1]: graph.get(key).pools for key in graph.get_all_asset_keys() if "enriched" in key.path[-1]}
    assert pools == {"enriched_tickets": {"dify"}, "enriched_reviews": {"dify_reviews_dify_api_key"}}
    reviews_checks = {key.name for key in graph.asset_check_keys if key.asset_key.path[0] == "shop"}
    tickets_checks = {key.name for key in graph.asset_check_keys if len(key.asset_key.path) == 1}
    assert reviews_checks == tickets_checks and "categories_allowed" in reviews_checks
    resources = defs.resources
    assert {"source_database", "source_reviews_reviews_database_url", "dify",
            "dify_reviews_dify_api_key"} <= set(resources)
    assert resources["dify_reviews_dify_api_key"].app_mode == "completion" and resources["dify"].app_mode == "workflow"
    assert resources["source_reviews_reviews_database_url"].table == "reviews"
    daily_reviews = defs.resolve_job_def("daily_reviews")
    assert {key.path[-1] for key in daily_reviews.asset_layer.selected_asset_keys} == {
        "raw_reviews", "clean_reviews", "quarantined_reviews", "review_shards", "enriched_reviews",
        "reviews_parquet", "reviews_elasticsearch"}


def test_two_enrichments_on_one_app_share_its_resource_and_its_pool(environment):
    second = reviews_contract(app=AppContract(mode="workflow"))
    defs = build_code_location([tickets_beside_others(), second], environment)
    graph = defs.resolve_asset_graph()
    assert {graph.get(key).pools.pop() for key in graph.get_all_asset_keys() if "enriched" in key.path[-1]} == {"dify"}
    assert not [key for key in defs.resources if key.startswith("dify_")]


def test_one_app_asked_in_two_modes_is_refused(environment):
    with pytest.raises(ContractError, match="resource 'dify'"):
        build_code_location([tickets_beside_others(), reviews_contract(app=AppContract(mode="completion"))],
                            environment)


@pytest.mark.parametrize(("second", "message"), [
    (tickets_contract(sinks=SinksContract(parquet_prefix="other", index_alias="other")),
     "enrichments 'tickets' and 'tickets' have the same name"),
    (reviews_contract(sinks=SinksContract(index_alias="reviews_enriched")),
     "enrichment 'reviews' has no sinks.parquet_prefix"),
    (reviews_contract(sinks=SinksContract(parquet_prefix="reviews", index_alias="tickets_enriched")),
     "enrichments 'tickets' and 'reviews' publish to the search alias 'tickets_enriched'"),
])
def test_enrichments_that_would_write_over_each_other_fail_the_load_naming_the_clash(environment, second, message):
    with pytest.raises(ContractError, match=message):
        build_code_location([tickets_beside_others(), second], environment)


def test_a_missing_or_malformed_variable_of_a_contract_fails_the_load_naming_it(environment, monkeypatch):
    monkeypatch.delenv("REVIEWS_DIFY_API_KEY")
    with pytest.raises(ConfigurationError) as raised:
        build_code_location([tickets_beside_others(), reviews_contract()], environment)
    assert raised.value.problems == [
        "REVIEWS_DIFY_API_KEY is not set (enrichment 'reviews', app.api_key_env): "
        "e.g. REVIEWS_DIFY_API_KEY=app-xxxxxxxxxxxxxxxx"]
    with pytest.raises(ConfigurationError) as raised:
        build_enrichment(reviews_contract(), environment)
    assert "REVIEWS_DIFY_API_KEY is not set" in str(raised.value)

    bad = {**REVIEWS_ENV, "REVIEWS_DATABASE_URL": "mysql://reader:secret@db/shop", "REVIEWS_DIFY_API_KEY": "a b"}
    with pytest.raises(ConfigurationError) as raised:
        check_contract_variables([reviews_contract()], bad)
    assert [problem.split(" ", 1)[0] for problem in raised.value.problems] == [
        "REVIEWS_DATABASE_URL=(secret,", "REVIEWS_DIFY_API_KEY=(secret,"]
    assert "secret" not in "".join(p.replace("(secret, not shown)", "") for p in raised.value.problems)


REVIEWS_ATTRIBUTES = """\
name: reviews
key_prefix: [shop]
source: {url_env: REVIEWS_DATABASE_URL, table: reviews}
app: {api_key_env: REVIEWS_DIFY_API_KEY, mode: completion}
outputs:
  category:
    type: label
    allowed: [物流问题, 退款申请, 功能建议, 账户问题, 支付问题,
              产品质量, 售后维修, 订单修改, 技术故障, 其他]
  summary: {type: text, required: false}
  sentiment: {type: label, allowed: [positive, neutral, negative]}
sinks: {parquet_prefix: reviews, index_alias: reviews_enriched}
"""


def test_the_component_attributes_are_the_contract_fields_and_build_the_same_chain(environment, tmp_path,
                                                                                   monkeypatch):
    assert set(DifyEnrichment.model_fields) == set(EnrichmentContract.model_fields)
    component = DifyEnrichment.resolve_from_yaml(REVIEWS_ATTRIBUTES)
    declared, expected = component.contract(), reviews_contract()
    assert declared.model_dump(exclude={"outputs"}) == expected.model_dump(exclude={"outputs"})
    assert declared.label_values() == expected.label_values() and list(declared.outputs) == list(expected.outputs)
    declaration = "type: dify_pipeline.DifyEnrichment\nattributes:\n" + textwrap.indent(REVIEWS_ATTRIBUTES, "  ")
    defs = load_defs_folder(tmp_path, monkeypatch, reviews=declaration)
    assert dg.AssetKey(["shop", "enriched_reviews"]) in defs.resolve_asset_graph().get_all_asset_keys()


def test_a_component_with_a_wrong_field_names_it(environment):
    component = DifyEnrichment.resolve_from_yaml("name: reviews\noutputs: {score: {type: integer, allowed: [a]}}\n"
                                                 "cleaning: {max_shard_rows: 0}\n")
    with pytest.raises(ContractError) as raised:
        component.contract()
    assert "cleaning.max_shard_rows" in str(raised.value) and "outputs.score" in str(raised.value)


REVIEWS_COMPONENT = """\
type: dify_pipeline.DifyEnrichment
attributes:
  name: reviews
  key_prefix: [shop]
  source: {url_env: REVIEWS_DATABASE_URL, table: reviews}
  app: {api_key_env: REVIEWS_DIFY_API_KEY, mode: completion}
  outputs: {sentiment: {type: label, allowed: [positive, neutral, negative]}}
  sinks: {parquet_prefix: reviews, index_alias: reviews_enriched}
"""


def load_defs_folder(tmp_path, monkeypatch, **components: str) -> dg.Definitions:
    """The definitions `dg` loads from a project whose defs folder holds one `defs.yaml` per component."""
    module = f"enrichments_{tmp_path.name.replace('-', '_')}"
    (tmp_path / "pyproject.toml").write_text(
        f'[project]\nname = "{module}"\n\n[tool.dg]\ndirectory_type = "project"\n\n'
        f'[tool.dg.project]\nroot_module = "{module}"\n')
    for folder, text in components.items():
        (tmp_path / module / "defs" / folder).mkdir(parents=True)
        (tmp_path / module / "defs" / folder / "defs.yaml").write_text(text)
    for package in (tmp_path / module, tmp_path / module / "defs"):
        (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    return dg.load_from_defs_folder(path_within_project=tmp_path / module)


def test_components_side_by_side_in_one_defs_folder_load(environment, tmp_path, monkeypatch):
    tickets = REVIEWS_COMPONENT.replace("reviews", "tickets").replace("[shop]", "[support]")
    defs = load_defs_folder(tmp_path, monkeypatch, reviews=REVIEWS_COMPONENT, tickets=tickets)
    keys = defs.resolve_asset_graph().get_all_asset_keys()
    assert {dg.AssetKey(["shop", "enriched_reviews"]), dg.AssetKey(["support", "enriched_tickets"])} <= keys


@pytest.mark.parametrize(("change", "message"), [
    # The same name under another key prefix: the assets differ, the job, group and stage folders would not.
    ({"key_prefix: [shop]": "key_prefix: [support]"}, "'reviews' (defs/reviews) and 'reviews' (defs/second)"),
    ({"name: reviews": "name: critiques\n  record_name: review", "index_alias: reviews_enriched": "index_alias: b"},
     "'reviews' (defs/reviews) and 'critiques' (defs/second) have the same record name 'review'"),
    ({"name: reviews": "name: critiques", "index_alias: reviews_enriched": "index_alias: b"},
     "'reviews' (defs/reviews) and 'critiques' (defs/second) write the Parquet folder 'reviews'"),
    ({"name: reviews": "name: critiques", "parquet_prefix: reviews": "parquet_prefix: b"},
     "'reviews' (defs/reviews) and 'critiques' (defs/second) publish to the search alias 'reviews_enriched'"),
    ({"name: reviews": "name: critiques", "parquet_prefix: reviews": "parquet_prefix: reviews/more",
      "index_alias: reviews_enriched": "index_alias: b"},
     "'critiques' (defs/second) writes the Parquet folder 'reviews/more', inside 'reviews' of 'reviews'"),
    ({"name: reviews": "name: critiques", "mode: completion": "mode: workflow", "parquet_prefix: reviews": "p: b",
      "index_alias: reviews_enriched": "index_alias: b"}, "sinks.p"),  # a sibling's own error is its own
])
def test_components_that_would_write_over_each_other_fail_the_load_naming_both(environment, tmp_path, monkeypatch,
                                                                             change, message):
    second = REVIEWS_COMPONENT
    for old, new in change.items():
        second = second.replace(old, new)
    with pytest.raises(Exception) as raised:
        load_defs_folder(tmp_path, monkeypatch, reviews=REVIEWS_COMPONENT, second=second)
    causes = [raised.value]
    while causes[-1].__cause__ is not None:
        causes.append(causes[-1].__cause__)
    assert any(isinstance(cause, ContractError) and message in str(cause) for cause in causes), causes


def test_one_app_asked_in_two_modes_by_two_components_is_refused_naming_both(environment, tmp_path, monkeypatch):
    second = REVIEWS_COMPONENT.replace("name: reviews", "name: critiques").replace("mode: completion", "mode: workflow")
    second = second.replace("parquet_prefix: reviews", "parquet_prefix: b").replace("reviews_enriched", "b")
    with pytest.raises(Exception) as raised:
        load_defs_folder(tmp_path, monkeypatch, reviews=REVIEWS_COMPONENT, second=second)
    assert "'reviews' (defs/reviews) and 'critiques' (defs/second) ask the app of REVIEWS_DIFY_API_KEY" in str(
        raised.value.__cause__)


def test_the_connection_settings_reach_every_app(monkeypatch):
    for name, value in {**LOADABLE_ENVIRONMENT, **REVIEWS_ENV, "DIFY_CONNECTION_REUSE_SECONDS": "0",
                        "DIFY_KEEP_ALIVE": "false"}.items():
        monkeypatch.setenv(name, value)
    defs = build_code_location([tickets_beside_others(), reviews_contract()], read_environment())
    resources = defs.resources
    apps = [resources[key] for key in ("dify", "dify_reviews_dify_api_key")]
    assert [app.connection_reuse_seconds for app in apps] == [0, 0]  # a connection per run, as the variable says
    assert not any(app.keep_alive for app in apps)
