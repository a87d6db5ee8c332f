import pytest

from dify_pipeline.contract import RESERVED_COLUMNS, ContractError, EnrichmentContract, parse_contract, tickets_contract
from dify_pipeline.schemas import CLEAN_FIELDS, PIPELINE_ENRICHMENT_FIELDS, SHARD_FIELD

REVIEWS = """
name: reviews
source: {table: product_reviews, key_column: review_id, text_columns: [title, review]}
app: {mode: completion, api_key_env: REVIEWS_DIFY_API_KEY, inputs: {title: title, review: review}}
outputs:
  sentiment: {type: label, allowed: [positive, neutral, negative]}
  score: {type: integer, minimum: 1, maximum: 5}
  aspects: {type: list, required: false}
sinks: {parquet_prefix: reviews, index_alias: reviews_enriched}
"""


def problems(data: dict) -> str:
    with pytest.raises(ContractError) as caught:
        parse_contract(data, origin="defs.yaml")
    return str(caught.value)


def test_a_yaml_contract_is_read_with_its_defaults(tmp_path):
    path = tmp_path / "reviews.yaml"
    path.write_text(REVIEWS)
    contract = EnrichmentContract.from_yaml(path)
    assert (contract.name, contract.singular, contract.app.mode) == ("reviews", "review", "completion")
    assert contract.app.base_url_env == "DIFY_BASE_URL" and contract.app.api_key_env == "REVIEWS_DIFY_API_KEY"
    assert list(contract.outputs) == ["sentiment", "score", "aspects"]
    assert contract.outputs["score"].maximum == 5 and not contract.outputs["aspects"].required
    assert contract.sinks.parquet_prefix == "reviews"


def test_every_mistake_is_named_by_its_field_in_one_error():
    message = problems({"name": "reviews", "source": {"table": "reviews; drop"},
                        "app": {"mode": "chat", "api_key_env": "reviews-key"},
                        "outputs": {"score": {"type": "integer", "allowed": ["a"]}, "tone": {"type": "label"}}})
    assert message.startswith("defs.yaml is not a valid enrichment contract")
    assert "source.table: table 'reviews; drop' is not a plain identifier" in message
    assert "app.api_key_env: 'reviews-key' is not an environment variable name" in message
    assert "outputs.score: `allowed` is for labels" in message
    assert "outputs.tone: a label needs `allowed`" in message
    assert "a column the pipeline writes itself" in problems({"name": "r", "outputs": {"dify_status": {}}})


def test_unknown_fields_are_refused_not_ignored():
    assert "outputs.score.maxium" in problems({"name": "r", "outputs": {"score": {"type": "integer", "maxium": 5}}})


def test_a_chat_app_needs_the_column_sent_as_its_query():
    assert "mode chat needs `query`" in problems({"name": "r", "app": {"mode": "chat"}, "outputs": {"x": {}}})


def test_no_output_may_take_the_name_of_a_column_the_pipeline_writes():
    written = set(CLEAN_FIELDS.names) | set(PIPELINE_ENRICHMENT_FIELDS.names) | {SHARD_FIELD.name}
    assert written <= RESERVED_COLUMNS


def test_the_ticket_example_is_one_instance_of_the_contract():
    contract = tickets_contract(cache_version="prompt-v2")
    assert contract.singular == "ticket" and contract.cache_version == "prompt-v2"
    assert contract.label_values()["sentiment"] == ["positive", "neutral", "negative"]
