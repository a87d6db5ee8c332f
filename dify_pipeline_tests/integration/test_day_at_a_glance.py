"""What the UI shows of a day without opening a file: row counts on every asset and the day's funnel."""

from __future__ import annotations

from dify_pipeline_tests.integration.pipeline import materialization_metadata, run_day

ASSETS = ["raw_tickets", "clean_tickets", "ticket_shards", "enriched_tickets", "tickets_parquet",
          "tickets_elasticsearch"]


def test_every_asset_records_its_row_count_and_the_published_day_its_funnel(
    pipeline_env, source_tickets, dagster_instance, dify_emulator
):
    result = run_day(dagster_instance)
    assert result.success
    metadata = {asset: materialization_metadata(result, asset) for asset in ASSETS}
    # dagster/row_count is what the catalog, the asset graph and the partition page show.
    assert {asset: m["dagster/row_count"] for asset, m in metadata.items()} == {
        asset: m["rows"] for asset, m in metadata.items()}
    funnel = {r.data["step"]: r.data["records"] for r in metadata["tickets_parquet"]["funnel"].records}
    clean = metadata["clean_tickets"]
    assert funnel == {
        "raw": metadata["raw_tickets"]["rows"], "clean": clean["rows"], "quarantined": clean["quarantined"],
        "duplicates removed": clean["duplicates_removed"], "sent": metadata["enriched_tickets"]["requests_sent"],
        "answered": metadata["enriched_tickets"]["succeeded"], "published": metadata["tickets_parquet"]["rows"],
    }
    assert funnel["raw"] == funnel["clean"] + funnel["quarantined"] + funnel["duplicates removed"] > 0
