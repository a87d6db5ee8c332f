import json
import math
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dify_pipeline.shard.sharding import assign_shards

SHARDING_MODULE = Path(__file__).resolve().parents[2] / "dify_pipeline" / "shard" / "sharding.py"


def keys(count: int) -> list[str]:
    return [f"tickets:{i:06d}" for i in range(count)]


@pytest.mark.parametrize(("count", "max_rows"),
                         [(1, 5), (5, 5), (6, 5), (10, 3), (100, 7), (1000, 1000), (1001, 1000), (17, 1)])
def test_shards_respect_the_bound_and_differ_by_at_most_one_row(count, max_rows):
    shards = assign_shards(keys(count), max_rows)
    sizes = Counter(shards.tolist())
    assert sorted(sizes) == list(range(math.ceil(count / max_rows)))  # as few shards as the bound allows
    assert max(sizes.values()) <= max_rows
    assert max(sizes.values()) - min(sizes.values()) <= 1
    assert sum(sizes.values()) == count


def test_shard_numbers_are_int32_one_per_record():
    shards = assign_shards(keys(50), 8)
    assert shards.dtype == np.int32
    assert shards.shape == (50,)


def test_assignment_does_not_depend_on_input_order():
    records = keys(500)
    shuffled = records[:]
    random.Random(7).shuffle(shuffled)
    in_order = dict(zip(records, assign_shards(records, 64).tolist()))
    reordered = dict(zip(shuffled, assign_shards(shuffled, 64).tolist()))
    assert reordered == in_order


def test_assignment_is_the_same_every_time():
    records = keys(300)
    assert assign_shards(records, 50).tolist() == assign_shards(list(records), 50).tolist()


def test_shards_are_not_simply_runs_of_consecutive_keys():
    shards = assign_shards(keys(1000), 100).tolist()
    assert shards != sorted(shards)  # ordered by key hash, so each shard mixes the day


def test_assignment_is_the_same_in_another_process_with_another_hash_seed():
    records = keys(200) + ["退款:1", "退款:2"]
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('sharding', {str(SHARDING_MODULE)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print(json.dumps(m.assign_shards(json.loads(sys.stdin.read()), 16).tolist()))\n"
    )
    results = []
    for seed in ("1", "2"):
        other = subprocess.run([sys.executable, "-c", code], input=json.dumps(records), capture_output=True,
                               text=True, check=True, env={"PYTHONHASHSEED": seed})
        results.append(json.loads(other.stdout))
    assert results[0] == results[1] == assign_shards(records, 16).tolist()


def test_no_records_give_no_shards():
    shards = assign_shards([], 10)
    assert shards.shape == (0,)
    assert shards.dtype == np.int32


def test_a_bound_below_one_is_rejected():
    with pytest.raises(ValueError):
        assign_shards(keys(3), 0)


def test_tied_hashes_are_ordered_by_key_as_a_sort_by_hash_and_key_would():
    from dify_pipeline.shard.sharding import shards_of_hashes

    rng = np.random.default_rng(0)
    for _ in range(200):
        count = int(rng.integers(1, 60))
        record_keys = [f"k{rng.integers(0, 1000)}" for _ in range(count)]
        hashes = rng.integers(0, 5, count).astype(np.uint64)  # many ties
        max_rows = int(rng.integers(1, 10))
        order = np.lexsort((np.asarray(record_keys, dtype=object).astype(str), hashes))
        expected = np.empty(count, np.int32)
        expected[order] = (np.arange(count) * -(-count // max_rows)) // count
        asked: list[int] = []

        def keys_at(positions, asked=asked, record_keys=record_keys):
            asked.extend(positions)
            return [record_keys[p] for p in positions]

        shards = shards_of_hashes(hashes, keys_at, max_rows)
        assert shards.tolist() == expected.tolist()
        assert len(set(asked)) == len(asked) <= count  # keys are read only where hashes tie, once
