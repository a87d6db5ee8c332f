"""The day's funnel table: one row per step, in order, with its share of the raw rows."""

import dagster as dg

from dify_pipeline.funnel import funnel_table


def rows(table: dg.TableMetadataValue) -> list[tuple[str, int, float]]:
    return [(r.data["step"], r.data["records"], r.data["share_of_raw"]) for r in table.records]


def test_the_funnel_follows_the_day_from_raw_to_published():
    recorded = {"raw_tickets": {"rows": 1000},
                "clean_tickets": {"rows": 900, "quarantined": 40, "duplicates_removed": 60},
                "enriched_tickets": {"requests_sent": 700, "succeeded": 890}}
    table = funnel_table(recorded, published=900)
    assert rows(table) == [("raw", 1000, 1.0), ("clean", 900, 0.9), ("quarantined", 40, 0.04),
                           ("duplicates removed", 60, 0.06), ("sent", 700, 0.7), ("answered", 890, 0.89),
                           ("published", 900, 0.9)]
    assert [c.name for c in table.schema.columns] == ["step", "records", "share_of_raw", "meaning"]


def test_a_step_that_did_not_record_the_day_shows_minus_one_and_an_empty_day_has_no_shares():
    table = funnel_table({"raw_tickets": {"rows": 0}}, published=0)
    assert rows(table)[0] == ("raw", 0, 0.0)
    assert rows(table)[1] == ("clean", -1, 0.0)
    assert rows(table)[-1] == ("published", 0, 0.0)
