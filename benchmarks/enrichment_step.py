"""The enrichment step's own path against a zero-latency Dify emulator: answers/s with the cache on.

    PYTHONPATH=. .venv/bin/python benchmarks/enrichment_step.py                 # SQLite cache, 20,000 records
    RESULT_CACHE_URL=postgresql://postgres@127.0.0.1:5432/postgres PYTHONPATH=. \
        .venv/bin/python benchmarks/enrichment_step.py
    PYTHONPATH=. .venv/bin/python benchmarks/enrichment_step.py --records 50000 --cache both
    PYTHONPATH=. .venv/bin/python benchmarks/enrichment_step.py --concurrency 50 --latency-ms 200 --server-limit 20
    PYTHONPATH=. .venv/bin/python benchmarks/enrichment_step.py --connection-reuse-seconds 0 1  # side by side

With PostgreSQL, a fresh database is created next to the URL's (and dropped after), so the cache starts empty.

`enriched_tickets` is materialized for one day whose shards are written beforehand: the app's form, the sinks'
preflight, planning, the cache (lookup, group commits), the Dify client, parsing, progress, judging on read and
the enriched shards, all inside the clock. The Dify and Elasticsearch emulators run in their own processes, so
their CPU is not ours. Prints answers/s (distinct inputs answered ÷ the step's wall time, from its own
STEP_START/STEP_SUCCESS events) and the ratio to the 1,000 answers/s bound; beside it the rate while the step sent
(its last progress line) and the seconds of fixed work, and the CPU microseconds per record of this process and of
the emulator: on a shared machine the rates follow the cores others leave, the CPU per record does not. `--bare`
runs a bare aiohttp loop against the same emulator before and after the step: the emulator's ceiling right then.
With `--latency-ms`, the bound is min(C, server limit) / L with L as the emulator timed its runs
(`mean_run_seconds`: its timers wake late, ~202 ms for 200, which no client can beat); the ratio to the nominal
C / L is printed beside it (`ratio_to_nominal`).
The emulator stays one process: with pooled connections it costs ~0.4-0.5 ms of CPU per run, so 1,000 runs/s
take half a core; it is not the ceiling (`--bare` shows it), the machine's free cores are.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path

import dagster as dg
import httpx
import pyarrow as pa
import sqlalchemy as sa

from benchmarks._harness import Emulator, cpu_seconds, emulator, emulator_process, peak_rss_mb, report
from dify_pipeline.contract import tickets_contract
from dify_pipeline.factory import steps_of
from dify_pipeline.resources.dify import DifyResource
from dify_pipeline.resources.result_cache import ResultCache
from dify_pipeline.resources.search import SearchCluster
from dify_pipeline.resources.storage import ObjectStorage
from dify_pipeline.stages import shard_file

KEY = "app-benchmark"
DAY = "2026-11-20"
BOUND = 1000.0
# A request that starts a run (the step pins the day's version: /workflows/{workflow_id}/run after the first).
RUN_PATHS = ("/workflows/run", "/workflows/{workflow_id}/run", "/chat-messages", "/completion-messages")


def write_shards(storage: ObjectStorage, records: int, shard_rows: int = 500) -> None:
    for shard, start in enumerate(range(0, records, shard_rows)):
        keys = range(start, min(start + shard_rows, records))
        table = pa.table({
            "record_key": [str(i) for i in keys],
            "subject": [f"订单 {i} 物流延迟" for i in keys],
            "body": [f"第 {i} 号工单: 快递三天没有更新, 请尽快处理 (run {uuid.uuid4().hex[:6]})" for i in keys],
        })
        storage.write_parquet(shard_file(storage, "ticket_shards", DAY, shard), table.schema, [table])


def postgres_url(base: str) -> str:
    """A fresh database next to `base`'s, so every run starts with an empty cache."""
    url = sa.make_url(base)
    name = f"bench_cache_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def bare_loop(dify: Emulator, records: int, concurrency: int, bound: float, latency_s: float = 0.0) -> float:
    """The emulator's ceiling on this machine right now: a bare aiohttp loop (pooled connections, no gate, no
    journal, no cache) sending the same requests. Beside the step's figures it says how much of a shortfall is
    ours and how much the emulator's latency model or the machine's load."""
    import asyncio

    import aiohttp

    async def load() -> float:
        todo = iter(range(records))
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"},
                                         connector=aiohttp.TCPConnector(limit=concurrency)) as session:
            async def worker() -> None:
                for i in todo:
                    body = {"inputs": {"subject": f"订单 {i} 物流延迟", "body": f"第 {i} 号工单: 快递三天没有更新"},
                            "response_mode": "blocking", "user": f"bare:{i}"}
                    async with session.post(f"{dify.url}/workflows/run", json=body) as response:
                        await response.read()
                        if response.status != 200:
                            raise RuntimeError(f"the emulator answered {response.status}")

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - started

    httpx.post(f"{dify.url.removesuffix('/v1')}/_emulator/reset")
    cpu_before, dify_cpu_before = cpu_seconds(), dify.cpu_seconds()
    seconds = asyncio.run(load())
    rate = records / seconds
    timed = served_bound(bound, latency_s, httpx.get(f"{dify.url.removesuffix('/v1')}/_emulator/stats").json())
    report("bare aiohttp loop (the emulator's ceiling now)", {
        "records": records, "seconds": seconds, "answers/s": rate, "bound/s": bound, "concurrency": concurrency,
        **({"ratio_to_nominal": rate / bound, "served_bound/s": timed} if latency_s else {}),
        "cpu_us_per_record": (cpu_seconds() - cpu_before) / records * 1e6,
        "emulator_cpu_us_per_record": (dify.cpu_seconds() - dify_cpu_before) / records * 1e6,
    }, rate / timed, 0.0, True)
    return rate


def fresh(url: str, turn: int) -> str:
    """An empty cache for each turn: a SQLite file of its own; PostgreSQL's table emptied."""
    if url.startswith("sqlite"):
        return url.replace("cache.sqlite", f"cache-{turn}.sqlite")
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        for table in ("dify_results", "dify_attempts"):
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    engine.dispose()
    return url


def drop_postgres(url: str) -> None:
    parsed = sa.make_url(url)
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS {parsed.database} WITH (FORCE)"))
    admin.dispose()


def step_seconds(instance: dg.DagsterInstance, run_id: str) -> float:
    """From the step's start to its end (success or failure), as the instance recorded them."""
    times = {entry.dagster_event.event_type_value: entry.timestamp for entry in instance.all_logs(run_id)
             if entry.dagster_event is not None and entry.dagster_event.step_key == "enriched_tickets"}
    return times.get("STEP_SUCCESS", times.get("STEP_FAILURE", 0.0)) - times["STEP_START"]


def sending_rate(instance: dg.DagsterInstance, run_id: str) -> float | None:
    """The rate of the step's last progress line: answers/s while it sent (from just before the client started
    to the last answer), without the step's fixed work (form, preflight, planning, the last shard's rows)."""
    rates = [float(match.group(1)) for entry in instance.all_logs(run_id)
             if (match := re.search(r"records \(100%\), ([\d.]+)/s", entry.user_message or ""))]
    return rates[-1] if rates else None


def served_bound(bound: float, latency_s: float, stats: dict) -> float:
    """The bound with L as the server timed its runs (its timers wake a little late: ~202 ms for 200 ms): what
    no client could beat. At zero latency, the fixed 1,000 answers/s."""
    if not latency_s or not stats.get("mean_run_seconds"):
        return bound
    return bound * latency_s / stats["mean_run_seconds"]


def run(cache_url: str, records: int, concurrency: int, dify: Emulator, es_url: str, folder: Path,
        enabled: bool = True, bound: float = BOUND, reuse: float | None = None, latency_s: float = 0.0) -> bool:
    dify_url = dify.url
    stages = ObjectStorage(url=str(folder / "stages"))
    write_shards(stages, records)
    httpx.post(f"{dify_url.removesuffix('/v1')}/_emulator/reset")
    resources = {
        "dify": DifyResource(base_url=dify_url, api_key=KEY, max_concurrency=concurrency,
                             **({} if reuse is None else {"connection_reuse_seconds": reuse})),
        "result_cache": ResultCache(url=cache_url, enabled=enabled),
        "stage_storage": stages,
        "parquet_output": ObjectStorage(url=str(folder / "out")),
        "elasticsearch": SearchCluster(url=es_url, index=f"bench_{uuid.uuid4().hex[:6]}"),
    }
    cpu_before, dify_cpu_before = cpu_seconds(), dify.cpu_seconds()
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([steps_of(tickets_contract())["enriched_tickets"]], partition_key=DAY,
                                resources=resources, instance=instance, raise_on_error=False)
        seconds = step_seconds(instance, result.run_id)
        sending = sending_rate(instance, result.run_id)
    # CPU per answer, this process (Dagster, the step, the client) and the emulator: on a shared machine the
    # rate depends on the cores others leave; these do not.
    cpu_us = (cpu_seconds() - cpu_before) / records * 1e6
    dify_cpu_us = (dify.cpu_seconds() - dify_cpu_before) / records * 1e6
    stats = httpx.get(f"{dify_url.removesuffix('/v1')}/_emulator/stats").json()
    paid = stats["paid_runs"]
    [event] = result.get_asset_materialization_events()
    metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    answered = metadata["answered_this_run"]
    rate = answered / seconds
    backend = sa.make_url(cache_url).get_backend_name()
    least = 0.95 if latency_s else 1.0
    timed = served_bound(bound, latency_s, stats)
    passed = result.success and answered == records == paid and rate >= least * timed
    reused = "" if reuse is None else f", connections reused {reuse:g} s"
    report(f"enrichment step, cache {'on ' + backend if enabled else 'off'}{reused}", {
        "records": records, "paid_runs": paid, "step_seconds": seconds, "answers/s": rate, "bound/s": bound,
        **({"ratio_to_nominal": rate / bound, "server_run_ms": stats["mean_run_seconds"] * 1000,
            "served_bound/s": timed} if latency_s else {}),
        "sending_answers/s": sending or 0.0,
        "fixed_seconds": seconds - records / sending if sending else 0.0,
        "concurrency": concurrency, "failed": metadata["failed"], "peak_rss_mb": peak_rss_mb(),
        "cpu_us_per_record": cpu_us, "emulator_cpu_us_per_record": dify_cpu_us,
        "attempts_per_record": sum(count for path, count in stats["requests_by_path"].items()
                                   if path.endswith(RUN_PATHS)) / records,
    }, rate / timed, least, passed)
    return passed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="the emulator's run duration (median)")
    parser.add_argument("--server-limit", type=int,
                        help="the app's limit of runs in flight (Dify's max_active_requests)")
    parser.add_argument("--cache", choices=["env", "sqlite", "postgresql", "both", "off"], default="env",
                        help="env: RESULT_CACHE_URL when set, else SQLite; both: SQLite then PostgreSQL; "
                             "off: the cache disabled, the client's own ceiling for comparison")
    parser.add_argument("--connection-reuse-seconds", type=float, nargs="+", default=[None],
                        help="the client's connection_reuse_seconds, each value in turn (0: a connection per run)")
    parser.add_argument("--bare", action="store_true",
                        help="also a bare aiohttp loop against the same emulator, before and after: its ceiling now")
    args = parser.parse_args()
    app = {"api_key": KEY, **({"max_active_requests": args.server_limit} if args.server_limit else {})}
    config = {"apps": [app], "latency_ms": args.latency_ms, "seed": 1,
              "server_worker_connections": None}  # workers enough: the client, not a 10-connection cap, is measured
    # At a latency, the bound is what the client's or the server's limit lets through: min(C, limit) / L.
    bound = min(args.concurrency, args.server_limit or args.concurrency) / (args.latency_ms / 1000) \
        if args.latency_ms else BOUND
    results = []
    with tempfile.TemporaryDirectory() as tmp, \
            emulator("dify_pipeline_dev.emulators.dify", config) as dify, \
            emulator_process("dify_pipeline_dev.emulators.elasticsearch") as es_url:
        urls = []
        env_url = os.environ.get("RESULT_CACHE_URL")
        if args.cache in ("sqlite", "both", "off") or (args.cache == "env" and not env_url):
            urls.append(f"sqlite:///{tmp}/cache.sqlite")
        if args.cache in ("postgresql", "both"):
            urls.append(postgres_url(env_url or "postgresql://postgres@127.0.0.1:5432/postgres"))
        elif args.cache == "env" and env_url:
            urls.append(postgres_url(env_url) if env_url.startswith("postgresql") else env_url)
        bare_concurrency = min(args.concurrency, args.server_limit or args.concurrency)
        if args.bare:
            bare_loop(dify, args.records, bare_concurrency, bound, args.latency_ms / 1000)
        for index, url in enumerate(urls):
            try:
                for turn, reuse in enumerate(args.connection_reuse_seconds):
                    results.append(run(fresh(url, turn), args.records, args.concurrency, dify, es_url,
                                       Path(tmp) / f"{index}-{turn}", enabled=args.cache != "off", bound=bound,
                                       reuse=reuse, latency_s=args.latency_ms / 1000))
            finally:
                if url.startswith("postgresql"):
                    drop_postgres(url)
        if args.bare:
            bare_loop(dify, args.records, bare_concurrency, bound, args.latency_ms / 1000)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
