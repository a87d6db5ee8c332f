"""The day's funnel: how many records each step kept, from the source's rows to the published ones.

Read from what each step recorded for the day (its latest materialization), so it costs no data read.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

# (label, asset, metadata entry, what the figure counts)
FUNNEL_STEPS = [
    ("raw", "raw_tickets", "rows", "rows of the day exported from the source"),
    ("clean", "clean_tickets", "rows", "one per record key, masked: the records the day holds"),
    ("quarantined", "clean_tickets", "quarantined", "rows without a key, a timestamp or any text"),
    ("duplicates removed", "clean_tickets", "duplicates_removed", "older versions of a record key"),
    ("sent", "enriched_tickets", "requests_sent", "distinct inputs this run paid for (others: cache, duplicates)"),
    ("answered", "enriched_tickets", "succeeded", "records with an answer, from this run or the cache"),
]
FUNNEL_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("step", "string"), dg.TableColumn("records", "int"),
    dg.TableColumn("share_of_raw", "float", description="records / raw rows"),
    dg.TableColumn("meaning", "string"),
])


def funnel_table(recorded: Mapping[str, Mapping[str, int]], published: int) -> dg.TableMetadataValue:
    """The funnel as a metadata table, from `recorded` (asset → its metadata for the day) and the rows published.

    A figure a step did not record (the step never ran for the day) is -1, so the table keeps its shape.
    """
    counts = [(label, int(recorded.get(asset, {}).get(entry, -1)), meaning)
              for label, asset, entry, meaning in FUNNEL_STEPS]
    counts.append(("published", int(published), "rows in the day's output"))
    raw = counts[0][1]
    return dg.MetadataValue.table(
        records=[dg.TableRecord({"step": label, "records": records, "meaning": meaning,
                                 "share_of_raw": round(records / raw, 4) if raw > 0 and records >= 0 else 0.0})
                 for label, records, meaning in counts],
        schema=FUNNEL_SCHEMA,
    )


def recorded_counts(instance: dg.DagsterInstance, day: str) -> dict[str, dict[str, int]]:
    """asset → the integer entries of its latest materialization of `day`, for the assets the funnel reads."""
    found: dict[str, dict[str, int]] = {}
    for asset in dict.fromkeys(asset for _, asset, _, _ in FUNNEL_STEPS):
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[day]), limit=1).records
        if records:
            metadata = records[0].asset_materialization.metadata
            found[asset] = {name: value.value for name, value in metadata.items()
                            if isinstance(value, dg.IntMetadataValue)}
    return found
