"""The whole day at growing sizes: each step's wall time, rows/s and peak memory, in the step's own process.

    .venv/bin/python -m benchmarks.scale                               # 5k, 50k, 200k source rows
    .venv/bin/python -m benchmarks.scale --sizes 5000 50000 1000000    # any sizes (1M: ~10 min without inference)
    .venv/bin/python -m benchmarks.scale --infer-up-to 50000           # send Dify the days up to 50k rows
    .venv/bin/python -m benchmarks.scale --sizes 50000 1000000 --reuse-source --stages extract   # re-run a step
    .venv/bin/python -m benchmarks.scale --sizes 1000000 --reuse-source --work-folder /tmp/scale --stages publish
                                                  # the publishing steps again over the stages an earlier run kept

For each size, a MariaDB database `dify_pipeline_bench_scale` (127.0.0.1:3306, root) is filled with one day of
sample tickets with distinct texts (`generate_tickets(distinct_texts=True)`, duplicates, PII and bad rows
included; `LOAD DATA`), then the day runs as production runs it: `dagster asset materialize -m
dify_pipeline.definitions --partition DAY --select ...` with the package's executor, so each step runs in a
process of its own (forked from the code location's preloaded process). The benchmark reads every process of
the run's tree from /proc every 50 ms, keeps each one's VmHWM (the kernel's peak resident memory of that
process), and names each step's process by the pid its STEP_START event records.

Three runs per day: extract/clean/shard, then `enriched_tickets` against the Dify emulator (zero latency, its own
process; result cache on, SQLite) for days up to `--infer-up-to` rows, else the enriched stage is written
directly from the shards (same schema, fixed answers; not a measured step), then the two publishing steps
(Parquet to a local folder, the Elasticsearch emulator in its own process).

The bounds: every step's peak within 1.3x of its peak at 50,000 rows, and under 600 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import pymysql

from benchmarks._harness import emulator_process

DATABASE = "dify_pipeline_bench_scale"
SERVER = dict(host="127.0.0.1", port=3306, user="root", password="")
DAY = "2026-11-20"
KEY = "app-scale-benchmark"
CHUNK = 50_000  # tickets generated at a time (each chunk its own seed and id range)
COLUMNS = ["id", "subject", "body", "channel", "customer_id", "priority", "created_at", "updated_at"]
STAGES = [
    ("extract, clean, shard", "raw_tickets,clean_tickets,quarantined_tickets,ticket_shards"),
    ("infer", "enriched_tickets"),
    ("publish", "tickets_parquet,tickets_elasticsearch"),
]
STEPS = ["raw_tickets", "clean_tickets", "ticket_shards", "enriched_tickets", "enriched_tickets_day_checks",
         "tickets_parquet", "tickets_parquet_parquet_matches_enriched", "tickets_elasticsearch",
         "tickets_elasticsearch_elasticsearch_matches_parquet"]  # the day's steps, checks included
BOUND_RATIO, BOUND_MB = 1.3, 600


# -- the source ---------------------------------------------------------------------------------------


_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})  # LOAD DATA's


def _tsv(value) -> str:
    import pandas as pd

    if value is None or value is pd.NA or (isinstance(value, float) and value != value) or value is pd.NaT:
        return "\\N"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    text = str(value)
    return text.translate(_TSV_ESCAPES)


def database_name(rows: int, reuse: bool) -> str:
    """One database per size when sources are kept for reuse, else the one database every size replaces."""
    return f"{DATABASE}_{rows}" if reuse else DATABASE


def source_rows(database: str) -> int | None:
    """Rows of the day already loaded in `database`, None when it has no tickets table."""
    try:
        with pymysql.connect(**SERVER, database=database) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM tickets")
            return cursor.fetchone()[0]
    except pymysql.err.MySQLError:
        return None


def load_source(rows: int, folder: str, database: str = DATABASE) -> float:
    """A day of `rows` sample tickets (distinct texts) in MariaDB; returns the seconds it took."""
    import sqlalchemy as sa

    from dify_pipeline_dev.demo.sample_data import create_source_table, generate_tickets

    started = time.perf_counter()
    with pymysql.connect(**SERVER) as connection, connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {database}")
        cursor.execute(f"CREATE DATABASE {database} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    engine = sa.create_engine(f"mysql+pymysql://root@127.0.0.1:3306/{database}")
    create_source_table(engine, "tickets")
    engine.dispose()
    path = os.path.join(folder, "tickets.tsv")
    with open(path, "w", encoding="utf-8") as handle:
        for chunk, start in enumerate(range(0, rows, CHUNK)):
            tickets = generate_tickets(date.fromisoformat(DAY), count=min(CHUNK, rows - start), seed=1000 + chunk,
                                       timezone="UTC", distinct_texts=True)
            tickets["id"] = tickets["id"] + chunk * 100_000  # each chunk its own range of ids
            for values in zip(*(tickets[column].tolist() for column in COLUMNS)):
                handle.write("\t".join(_tsv(value) for value in values) + "\n")
    with pymysql.connect(**SERVER, database=database, local_infile=True, autocommit=True) as connection:
        with connection.cursor() as cursor:
            cursor.execute(f"LOAD DATA LOCAL INFILE %s INTO TABLE tickets CHARACTER SET utf8mb4 ({', '.join(COLUMNS)})",
                           (path,))
            cursor.execute("ANALYZE TABLE tickets")
    os.remove(path)
    return time.perf_counter() - started


# -- one run, its processes watched ---------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(parent, []).append(int(name))
    return tree


def _high_water_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return None


class RunFailed(RuntimeError):
    """A run that failed; `peaks` as `run_watched` returns them, up to the failure."""

    def __init__(self, message: str, peaks: dict[int, float]) -> None:
        super().__init__(message)
        self.peaks = peaks


def run_watched(command: list[str], env: dict, limit_seconds: float | None = None
                ) -> tuple[dict[int, float], float, bool]:
    """Run `command`; returns the peak VmHWM (MB) of every process of its tree, by pid, the wall time, and
    whether it was stopped at `limit_seconds`.

    After `limit_seconds` the run's process group is stopped (SIGTERM, then SIGKILL) and what was seen so far is
    returned: the peaks are then lower bounds of what the whole run would reach."""
    import signal
    import threading

    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # its own group: a run stopped at the limit takes its steps
    peaks: dict[int, float] = {}
    stderr_tail: list[str] = []
    reader = threading.Thread(target=lambda: stderr_tail.extend(process.stderr), daemon=True)
    reader.start()
    stopped = False
    while process.poll() is None:
        tree, pending, seen = _children(), [process.pid], []
        while pending:
            pid = pending.pop()
            seen.append(pid)
            pending.extend(tree.get(pid, []))
        for pid in seen:
            mb = _high_water_mb(pid)
            if mb is not None:
                peaks[pid] = max(peaks.get(pid, 0.0), mb)
        if limit_seconds is not None and not stopped and time.perf_counter() - started > limit_seconds:
            stopped = True
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        time.sleep(0.05)
    reader.join(timeout=5)
    if process.returncode and not stopped:
        raise RunFailed(f"{' '.join(command[:5])} failed:\n{''.join(stderr_tail[-40:])}", peaks)
    return peaks, time.perf_counter() - started, stopped


def step_figures(dagster_home: str, peaks: dict[int, float]) -> dict[str, dict]:
    """Per step of the latest run: seconds (STEP_START to STEP_SUCCESS), peak RSS of its process, its rows."""
    import dagster as dg

    with dg.DagsterInstance.from_config(dagster_home) as instance:
        [run] = instance.get_runs(limit=1)
        figures: dict[str, dict] = {}
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event is None or not entry.step_key:
                continue
            step = figures.setdefault(entry.step_key, {})
            if event.event_type_value == "STEP_START":
                step["start"], step["pid"] = entry.timestamp, event.pid
            elif event.event_type_value == "STEP_SUCCESS":
                step["seconds"] = entry.timestamp - step["start"]
            elif event.event_type_value == "ASSET_MATERIALIZATION":
                materialization = event.event_specific_data.materialization
                rows = materialization.metadata.get("rows")
                if rows is not None:
                    step.setdefault("rows", {})[materialization.asset_key.path[-1]] = rows.value
    for step in figures.values():
        step["peak_mb"] = peaks.get(step.get("pid"))
    return figures


def write_enriched_from_shards(stage_url: str) -> None:
    """The enriched stage as enriched_tickets leaves it, with fixed answers: for days too long to send Dify."""
    import pyarrow as pa

    from dify_pipeline.resources.storage import ObjectStorage
    from dify_pipeline.schemas import ENRICHMENT_FIELDS, PIPELINE_VERSION, with_fields
    from dify_pipeline.stages import day_folder, shard_file

    stage = ObjectStorage(url=stage_url)
    for index, path in enumerate(stage.list_files(day_folder(stage, "ticket_shards", DAY))):
        shard = stage.read_parquet(path)
        n = shard.num_rows
        values = {"category": "物流问题", "summary": "客户反映物流延迟。", "sentiment": "negative",
                  "outputs_json": "{}", "dify_status": "succeeded", "attempts": 1, "latency_ms": 1.0,
                  "total_tokens": 300, "total_price": 0.0003, "currency": "USD", "dify_run_id": "run",
                  "dify_workflow_id": "wf", "cache_hit": False, "inputs_truncated": False, "app_identity": "app",
                  "cache_version": "v1", "pipeline_version": PIPELINE_VERSION}
        columns = []
        for field in ENRICHMENT_FIELDS:
            if field.name == "enriched_at":
                columns.append(pa.array([0] * n, pa.int64()).cast(field.type))
            elif field.name in values:
                column = pa.array([values[field.name]] * n)
                columns.append(column.dictionary_encode().cast(field.type) if pa.types.is_dictionary(field.type)
                               else column.cast(field.type))
            else:
                columns.append(pa.nulls(n, field.type))
        schema = with_fields(shard.schema, ENRICHMENT_FIELDS)
        table = pa.Table.from_arrays([*shard.columns, *columns], schema=schema)
        stage.write_parquet(shard_file(stage, "enriched_tickets", DAY, index), schema, [table])


@contextmanager
def day_folder_for(rows: int, work: str | None) -> Iterator[str]:
    """The day's folder (stages, Parquet, Dagster home): `<work>/<rows>`, kept, or a temporary one."""
    if work is None:
        with tempfile.TemporaryDirectory(prefix="scale-") as folder:
            yield folder
        return
    folder = os.path.join(os.path.abspath(work), str(rows))
    os.makedirs(folder, exist_ok=True)
    yield folder


def run_day(rows: int, infer: bool, elasticsearch: bool, reuse: bool = False,
            stages: tuple[str, ...] = ("extract", "infer", "publish"), work: str | None = None,
            infer_seconds: float | None = None) -> dict[str, dict]:
    database = database_name(rows, reuse)
    with day_folder_for(rows, work) as folder:
        if reuse and source_rows(database) == rows:
            print(f"  {rows} rows already in MariaDB ({database})", flush=True)
        else:
            loaded = load_source(rows, folder, database)
            print(f"  {rows} rows loaded into MariaDB in {loaded:.0f} s", flush=True)
        dify_config = {"apps": [{"api_key": KEY}], "latency_ms": 0, "seed": 1, "server_worker_connections": None}
        with emulator_process("dify_pipeline_dev.emulators.dify", dify_config) as dify_url, \
                emulator_process("dify_pipeline_dev.emulators.elasticsearch") as es_url:
            os.makedirs(f"{folder}/home", exist_ok=True)
            env = {**os.environ, "PIPELINE_TIMEZONE": "UTC", "SOURCE_TIMEZONE": "UTC", "DAGSTER_HOME": f"{folder}/home",
                   "SOURCE_DATABASE_URL": f"mysql+mysqldb://root@127.0.0.1:3306/{database}",
                   "DIFY_BASE_URL": dify_url if dify_url.endswith("/v1") else f"{dify_url}/v1", "DIFY_API_KEY": KEY,
                   "DIFY_MAX_CONCURRENCY": "50", "OUTPUT_PARQUET_URL": f"{folder}/parquet",
                   "PIPELINE_STORAGE_URL": f"{folder}/stages", "ELASTICSEARCH_URL": es_url}
            figures: dict[str, dict] = {}
            for name, selection in STAGES:
                if name.split(",")[0] not in stages:
                    continue
                if name == "infer" and not infer:
                    write_enriched_from_shards(f"{folder}/stages")
                    continue
                if name == "publish" and not elasticsearch:
                    selection = "tickets_parquet"
                command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "dify_pipeline.definitions",
                           "--partition", DAY, "--select", selection]
                limit = infer_seconds if name == "infer" else None
                try:
                    peaks, seconds, stopped = run_watched(command, env, limit)
                except RunFailed as error:  # what ran before still counts; say what failed
                    print(f"  {name}: FAILED, {str(error).strip().splitlines()[-1]}", flush=True)
                    peaks, seconds, stopped = error.peaks, 0.0, False
                found = step_figures(f"{folder}/home", peaks)
                for step in found.values():
                    if stopped and "start" in step and "seconds" not in step:
                        step["stopped_after"] = time.time() - step["start"]  # its peak so far: a lower bound
                figures.update(found)
                print(f"  {name}: {seconds:.1f} s for the run ({', '.join(found)}){' STOPPED' if stopped else ''}",
                      flush=True)
                if stopped:  # the publishing steps read an enriched stage: write it as for a day not sent
                    write_enriched_from_shards(f"{folder}/stages")
            # Holding a million documents, the emulator takes longer to exit than the harness waits: empty it first.
            urllib.request.urlopen(urllib.request.Request(f"{es_url}/_emulator/reset", method="POST"), timeout=600)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 50_000, 200_000])
    parser.add_argument("--infer-up-to", type=int, default=5_000,
                        help="send Dify the days up to this many rows (the emulator answers at zero latency)")
    parser.add_argument("--elasticsearch-up-to", type=int, default=200_000,
                        help="publish to the Elasticsearch emulator the days up to this many rows (beyond, the "
                             "emulator, one Python process holding every document, times out)")
    parser.add_argument("--reuse-source", action="store_true",
                        help=f"keep each size's source in its own database ({DATABASE}_<rows>) and reuse it")
    parser.add_argument("--stages", nargs="+", choices=["extract", "infer", "publish"],
                        default=["extract", "infer", "publish"],
                        help="the runs to make (extract: extract, clean, shard)")
    parser.add_argument("--infer-seconds", type=float,
                        help="stop the enrichment run after this many seconds: its peak so far is shown as a lower "
                             "bound, and the enriched stage is written from the shards for the publishing steps")
    parser.add_argument("--work-folder",
                        help="keep each day's stages under <folder>/<rows> (default: a temporary folder), so a later "
                             "run with --stages infer or publish reads what an earlier --stages extract wrote")
    parser.add_argument("--table", metavar="JSON", help="print the table of figures an earlier --json wrote, and stop")
    parser.add_argument("--json", help="also write the figures to this file (after each day)")
    args = parser.parse_args()
    if args.table:
        with open(args.table) as handle:
            results = {int(rows): figures for rows, figures in json.load(handle).items()}
        return 0 if print_table(results, reference=results.get(50_000)) else 1

    results = {}
    for rows in args.sizes:
        print(f"day of {rows} source rows", flush=True)
        results[rows] = run_day(rows, infer=rows <= args.infer_up_to, elasticsearch=rows <= args.elasticsearch_up_to,
                                reuse=args.reuse_source, stages=tuple(args.stages), work=args.work_folder,
                                infer_seconds=args.infer_seconds)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump({str(k): v for k, v in results.items()}, handle, indent=1, default=str)
        print_table({rows: results[rows]}, reference=results.get(50_000))
    print("\nall days:")
    return 0 if print_table(results, reference=results.get(50_000)) else 1


def print_table(results: dict[int, dict], reference: dict | None) -> bool:
    print("\n| step | source rows | seconds | rows/s | peak RSS (MB) | vs 50k | bounds |")
    print("|---|---|---|---|---|---|---|")
    passed = True
    for rows, figures in results.items():
        for step, figure in sorted(figures.items(), key=lambda item: STEPS.index(item[0]) if item[0] in STEPS else 99):
            if step not in STEPS or "start" not in figure:
                continue  # a check's step, or one that never started
            peak = figure.get("peak_mb") or 0.0
            base = (reference or {}).get(step, {}).get("peak_mb")
            ratio = peak / base if base else None
            within = peak < BOUND_MB and (ratio is None or rows <= 50_000 or ratio <= BOUND_RATIO)
            passed &= within
            shown_ratio = f"{ratio:.2f}" if ratio else "-"
            if "seconds" not in figure and "stopped_after" not in figure:  # failed: its peak up to the failure
                print(f"| {step} | {rows:,} | failed | - | >= {peak:.0f} | >= {shown_ratio} | FAILED |")
                passed = False
                continue
            if "seconds" not in figure:  # stopped at --infer-seconds: the peak so far, a lower bound
                print(f"| {step} | {rows:,} | stopped at {figure['stopped_after']:.0f} | - | >= {peak:.0f} | "
                      f">= {shown_ratio} | {'so far OK' if within else 'OVER'} |")
                continue
            print(f"| {step} | {rows:,} | {figure['seconds']:.1f} | {rows / figure['seconds']:,.0f} | {peak:.0f} | "
                  f"{shown_ratio} | {'OK' if within else 'OVER'} |")
    return passed


if __name__ == "__main__":
    sys.exit(main())
