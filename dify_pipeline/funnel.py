"""The day's funnel: how many records each step kept, from the source's rows to the published ones.

Read from what each step recorded for the day (its latest materialization), so it costs no data read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dagster as dg

# (label, step, metadata entry, what the figure counts); an enrichment's asset is `<step>_<name>`
FUNNEL_STEPS = [
    ("raw", "raw", "rows", "rows of the day exported from the source"),
    ("clean", "clean", "rows", "one per record key, masked: the records the day holds"),
    ("quarantined", "clean", "quarantined", "rows without a key, a timestamp or any text"),
    ("duplicates removed", "clean", "duplicates_removed", "older versions of a record key"),
    ("sent", "enriched", "requests_sent", "distinct inputs this run paid for (others: cache, duplicates)"),
    ("answered", "enriched", "succeeded", "records with an answer, from this run or the cache"),
]
FUNNEL_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("step", "string"), dg.TableColumn("records", "int"),
    dg.TableColumn("share_of_raw", "float", description="records / raw rows"),
    dg.TableColumn("meaning", "string"),
])


def funnel_table(recorded: Mapping[str, Mapping[str, int]], published: int, name: str = "tickets"
                 ) -> dg.TableMetadataValue:
    """The funnel of enrichment `name` as a metadata table, from `recorded` (asset name → its metadata for the
    day) and the rows published.

    A figure a step did not record (the step never ran for the day) is -1, so the table keeps its shape.
    """
    counts = [(label, int(recorded.get(f"{step}_{name}", {}).get(entry, -1)), meaning)
              for label, step, entry, meaning in FUNNEL_STEPS]
    counts.append(("published", int(published), "rows in the day's output"))
    raw = counts[0][1]
    return dg.MetadataValue.table(
        records=[dg.TableRecord({"step": label, "records": records, "meaning": meaning,
                                 "share_of_raw": round(records / raw, 4) if raw > 0 and records >= 0 else 0.0})
                 for label, records, meaning in counts],
        schema=FUNNEL_SCHEMA,
    )


def recorded_counts(instance: dg.DagsterInstance, day: str, name: str = "tickets",
                    key_prefix: Sequence[str] = ()) -> dict[str, dict[str, int]]:
    """asset name → the integer entries of its latest materialization of `day`, for the assets the funnel reads
    (enrichment `name`, its asset keys under `key_prefix`)."""
    found: dict[str, dict[str, int]] = {}
    for asset in dict.fromkeys(f"{step}_{name}" for _, step, _, _ in FUNNEL_STEPS):
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey([*key_prefix, asset]), asset_partitions=[day]), limit=1).records
        if records:
            metadata = records[0].asset_materialization.metadata
            found[asset] = {name: value.value for name, value in metadata.items()
                            if isinstance(value, dg.IntMetadataValue)}
    return found
