"""clean_tickets and ticket_shards stream the day a batch at a time: their outputs on a day many batches long
equal the rules applied to the whole day at once, and the quarantine is an asset of its own that reconciles."""

from __future__ import annotations

import datetime

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import sqlalchemy as sa

from dify_pipeline.clean import assets as clean_assets
from dify_pipeline.clean.cleaning import CleaningConfig
from dify_pipeline.clean.cleaning import clean_tickets as clean_frame
from dify_pipeline.contract import CleaningContract, tickets_contract
from dify_pipeline.frames import to_pandas
from dify_pipeline.resources.source_database import SourceDatabase
from dify_pipeline.resources.storage import ObjectStorage
from dify_pipeline.shard import assets as shard_assets
from dify_pipeline.shard.sharding import assign_shards
from dify_pipeline_dev.demo.sample_data import create_source_table, generate_tickets, insert_tickets
from dify_pipeline_tests.integration.pipeline import ticket_steps

DAY = "2026-11-20"
SHARD_ROWS = 37
steps = ticket_steps(tickets_contract(cleaning=CleaningContract(max_shard_rows=SHARD_ROWS)))
raw_tickets, clean_tickets, ticket_shards = steps["raw_tickets"], steps["clean_tickets"], steps["ticket_shards"]


@pytest.fixture
def day_of_tickets(tmp_path):
    """A SQLite source holding a generated day (duplicates, PII, bad rows) and an empty local stage."""
    engine = sa.create_engine(f"sqlite:///{tmp_path}/source.db")
    create_source_table(engine)
    frame = generate_tickets(datetime.date.fromisoformat(DAY), count=2500, seed=11, timezone="UTC")
    insert_tickets(engine, "tickets", frame)
    engine.dispose()
    return {
        "source_database": SourceDatabase(url=f"sqlite:///{tmp_path}/source.db", source_timezone="UTC"),
        "stage_storage": ObjectStorage(url=str(tmp_path / "stages")),
    }


def stage(resources, name: str) -> pa.Table:
    return ds.dataset(resources["stage_storage"].path(name, f"dt={DAY}"), format="parquet").to_table()


def test_streamed_clean_and_shards_equal_the_whole_day_rules(day_of_tickets, monkeypatch):
    monkeypatch.setattr(clean_assets, "BATCH_ROWS", 100)  # 25 batches
    monkeypatch.setattr(shard_assets, "BATCH_ROWS", 64)
    monkeypatch.setattr(shard_assets, "GROUP_ROWS", 200)  # 5 shards of 37 rows per group on disk
    batches_seen = []
    real_clean = clean_assets.ChunkCleaner.clean
    monkeypatch.setattr(clean_assets.ChunkCleaner, "clean",
                        lambda self, chunk: batches_seen.append(len(chunk)) or real_clean(self, chunk))

    result = dg.materialize([raw_tickets, clean_tickets, ticket_shards], partition_key=DAY,
                            resources=day_of_tickets)
    assert result.success
    assert max(batches_seen) == 100 and len(batches_seen) >= 20

    raw = to_pandas(stage(day_of_tickets, "raw_tickets"))
    whole = clean_frame(raw, CleaningConfig())
    clean = to_pandas(stage(day_of_tickets, "clean_tickets")).sort_values("record_key").reset_index(drop=True)
    pd.testing.assert_frame_equal(clean, whole.clean, check_dtype=False)
    order = ["quarantine_reason", "record_key", "subject", "body"]
    quarantined = to_pandas(stage(day_of_tickets, "quarantined_tickets"))
    sort = lambda frame: frame.sort_values(order, na_position="first").reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(sort(quarantined), sort(whole.quarantine), check_dtype=False)

    # The shards: what the unstreamed step wrote (the day sorted by key, cut by key hash), shard by shard.
    folder = day_of_tickets["stage_storage"].path("ticket_shards", f"dt={DAY}")
    files = day_of_tickets["stage_storage"].list_files(folder)
    expected_shards = assign_shards(whole.clean["record_key"].tolist(), SHARD_ROWS)
    assert len(files) == expected_shards.max() + 1
    for shard, path in enumerate(files):
        written = to_pandas(day_of_tickets["stage_storage"].read_parquet(path))
        expected = whole.clean[expected_shards == shard].reset_index(drop=True)
        assert (written["shard"] == shard).all() and len(written) <= SHARD_ROWS
        pd.testing.assert_frame_equal(written.drop(columns="shard"), expected, check_dtype=False)


def test_quarantine_is_an_asset_whose_rows_reconcile_with_raw_and_clean(day_of_tickets):
    result = dg.materialize([raw_tickets, clean_tickets], partition_key=DAY, resources=day_of_tickets)
    assert result.success
    metadata = {event.asset_key.path[-1]: {k: v.value for k, v in event.materialization.metadata.items()}
                for event in result.get_asset_materialization_events()}
    raw, clean, quarantined = metadata["raw_tickets"], metadata["clean_tickets"], metadata["quarantined_tickets"]
    assert quarantined["rows"] == clean["quarantined"] == stage(day_of_tickets, "quarantined_tickets").num_rows > 0
    assert raw["rows"] == clean["rows"] + quarantined["rows"] + clean["duplicates_removed"]
    assert sum(quarantined["quarantine_reasons"].values()) == quarantined["rows"]
    reasons = stage(day_of_tickets, "quarantined_tickets").column("quarantine_reason").to_pylist()
    assert set(reasons) == set(quarantined["quarantine_reasons"]) and None not in reasons

    lineage = dg.Definitions(assets=[raw_tickets, clean_tickets, ticket_shards],
                             resources=day_of_tickets).resolve_asset_graph()
    assert lineage.get(dg.AssetKey("quarantined_tickets")).parent_keys == {dg.AssetKey("raw_tickets")}


def test_an_empty_day_gives_empty_clean_and_quarantine_and_one_empty_shard(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path}/source.db")
    create_source_table(engine)
    engine.dispose()
    resources = {"source_database": SourceDatabase(url=f"sqlite:///{tmp_path}/source.db"),
                 "stage_storage": ObjectStorage(url=str(tmp_path / "stages"))}
    assert dg.materialize([raw_tickets, clean_tickets, ticket_shards], partition_key=DAY, resources=resources).success
    assert stage(resources, "clean_tickets").num_rows == stage(resources, "quarantined_tickets").num_rows == 0
    assert stage(resources, "ticket_shards").num_rows == 0
    stages = resources["stage_storage"]
    assert len(stages.list_files(stages.path("ticket_shards", f"dt={DAY}"))) == 1
