"""Where each stage keeps a day's data inside the pipeline's own storage."""

from __future__ import annotations

from dify_pipeline.resources.storage import DAY_FILE_NAME, ObjectStorage


def day_folder(storage: ObjectStorage, stage: str, partition_key: str) -> str:
    return storage.path(stage, f"dt={partition_key}")


def day_file(storage: ObjectStorage, stage: str, partition_key: str) -> str:
    return f"{day_folder(storage, stage, partition_key)}/{DAY_FILE_NAME}"


def shard_file(storage: ObjectStorage, stage: str, partition_key: str, shard: int) -> str:
    return f"{day_folder(storage, stage, partition_key)}/shard-{shard:05d}.parquet"
