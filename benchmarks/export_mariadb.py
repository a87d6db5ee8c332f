"""Exporting a generated day from MariaDB as `raw_tickets` does, next to a bare driver fetch and the `mariadb` CLI.

    .venv/bin/python -m benchmarks.export_mariadb                  # a 1,000,000-row day
    .venv/bin/python -m benchmarks.export_mariadb --rows 200000

1. A database `dify_pipeline_bench_export` on 127.0.0.1:3306 (root) with the sample tickets table, filled with
   `LOAD DATA LOCAL INFILE`: the day (N rows), a quarter-size day after it, and rows on either side.
2. The bare tools, reading the same rows: mysqlclient alone (`SSCursor`, `fetchmany(10000)`, its default
   conversions, each batch transposed into an Arrow record batch and dropped: no Parquet, no file), and the CLI,
   `mariadb --quick` (streams rows as they come) and `mariadb --batch` (buffers the whole result first), both
   to /dev/null.
3. Ours, each run in a fresh process: `SourceDatabase.stream_day` + `ObjectStorage.write_parquet` into a local
   stage folder + `SourceDatabase.rows_without_timestamp`, exactly what `raw_tickets` does; with mysqlclient
   (the default when installed), then with the PyMySQL fallback for reference.
4. Memory: ours on the quarter day and on the full day; the growth of resident memory during the export must
   not follow the size of the day (it is bounded by the batch and row-group sizes).

Each figure is the best of `--repeat` runs (the machine's other load only ever slows a run down), printed side
by side. The bound: ours ≥ 0.80 × the bare mysqlclient fetch into Arrow, in rows per second.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta

import pymysql

from benchmarks._harness import measured, report

DATABASE = "dify_pipeline_bench_export"
SERVER = dict(host="127.0.0.1", port=3306, user="root", password="")
URL = f"mysql+pymysql://root@127.0.0.1:3306/{DATABASE}?charset=utf8mb4"
DAY = datetime(2026, 11, 20)
SMALL_DAY = DAY + timedelta(days=1)
COLUMNS = "id, subject, body, channel, customer_id, priority, created_at, updated_at"
SUBJECTS = ["订单物流延迟", "Refund not received", "无法登录账户", "App crashes on start", "发票开具问题",
            "Wrong item delivered"]
BODIES = [
    "我的订单已经三天没有更新物流信息了，请帮忙查一下。",
    "I was charged twice for my order and still have not received a refund after two weeks.",
    "登录时一直提示密码错误，但是我确定密码是对的，已经重置过两次。",
    "Since the last update the app closes right after the splash screen on my phone.",
]


def create_table() -> None:
    import sqlalchemy as sa

    from dify_pipeline_dev.demo.sample_data import create_source_table

    with pymysql.connect(**SERVER) as connection, connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        cursor.execute(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    engine = sa.create_engine(URL)
    create_source_table(engine, "tickets")
    engine.dispose()


def load_rows(folder: str, rows: int) -> None:
    """`rows` tickets on DAY, a quarter as many on the day after, a few on either side: one LOAD DATA."""
    rng = random.Random(1)
    path = os.path.join(folder, "tickets.tsv")
    days = [(DAY, rows), (SMALL_DAY, rows // 4), (DAY - timedelta(days=1), 1000), (SMALL_DAY + timedelta(days=1), 1000)]
    with open(path, "w", encoding="utf-8") as handle:
        key = 0
        for day, count in days:
            for _ in range(count):
                created = day + timedelta(microseconds=rng.randrange(86_400_000_000))
                updated = created + timedelta(seconds=rng.randrange(7200))
                handle.write(
                    f"{key}\t{SUBJECTS[key % 6]} #{key}\t{BODIES[key % 4]} 编号 {key} {BODIES[(key // 4) % 4]}\t"
                    f"{('email', 'web', 'app')[key % 3]}\t{rng.randrange(10**6)}\t"
                    f"{'high' if key % 7 == 0 else 'normal'}\t"
                    f"{created:%Y-%m-%d %H:%M:%S.%f}\t{updated:%Y-%m-%d %H:%M:%S.%f}\n"
                )
                key += 1
    with pymysql.connect(**SERVER, database=DATABASE, local_infile=True, autocommit=True) as connection:
        with connection.cursor() as cursor:
            cursor.execute(f"LOAD DATA LOCAL INFILE %s INTO TABLE tickets CHARACTER SET utf8mb4 ({COLUMNS})", (path,))
            cursor.execute("ANALYZE TABLE tickets")
    os.remove(path)


def cli_seconds(day: datetime, quick: bool) -> float:
    query = (f"SELECT {COLUMNS} FROM tickets WHERE created_at >= '{day:%Y-%m-%d}' "
             f"AND created_at < '{day + timedelta(days=1):%Y-%m-%d}'")
    command = ["mariadb", "--batch", *(["--quick"] if quick else []), "-h", SERVER["host"], "-P", str(SERVER["port"]),
               "-u", SERVER["user"], DATABASE, "-e", query]
    started = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def current_rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def case_ours(day_iso: str, driver: str, folder: str) -> dict:
    """raw_tickets' export path in this process: the resource streams, the storage writes Parquet."""
    from dify_pipeline.partitions import day_window
    from dify_pipeline.resources.source_database import SourceDatabase
    from dify_pipeline.resources.storage import ObjectStorage
    from dify_pipeline.stages import day_file

    SourceDatabase.export_driver = lambda self: driver  # type: ignore[method-assign]  # mysqldb is the default
    source, stage = SourceDatabase(url=URL, source_timezone="UTC"), ObjectStorage(url=folder)
    start, end = day_window(day_iso, "UTC")
    before = current_rss_mb()
    with measured() as usage:
        schema, batches = source.stream_day("created_at", start, end)
        rows = stage.write_parquet(day_file(stage, "raw_tickets", day_iso), schema, batches)
        source.rows_without_timestamp("created_at")  # raw_tickets counts the rows that belong to no day, too
    return {"rows": rows, "usage": usage.__dict__, "rss_before_mb": before}


def case_bare(day_iso: str, driver: str, folder: str) -> dict:
    """mysqlclient alone: the day's rows fetched unbuffered and each batch made an Arrow record batch."""
    import MySQLdb
    import MySQLdb.cursors
    import pyarrow as pa

    day = datetime.fromisoformat(day_iso)
    with measured() as usage:
        connection = MySQLdb.connect(host=SERVER["host"], port=SERVER["port"], user=SERVER["user"], database=DATABASE,
                                     charset="utf8mb4", cursorclass=MySQLdb.cursors.SSCursor)
        cursor = connection.cursor()
        cursor.execute(f"SELECT {COLUMNS} FROM tickets WHERE created_at >= %s AND created_at < %s",
                       (day, day + timedelta(days=1)))
        names, rows = [d[0] for d in cursor.description], 0
        while batch := cursor.fetchmany(10_000):
            rows += pa.RecordBatch.from_arrays([pa.array(column) for column in zip(*batch)], names=names).num_rows
        connection.close()
    return {"rows": rows, "usage": usage.__dict__, "rss_before_mb": 0.0}


def run_ours(day: datetime, driver: str, folder: str, case: str = "ours") -> dict:
    output = subprocess.run([sys.executable, "-m", "benchmarks.export_mariadb", "--case", case, f"{day:%Y-%m-%d}",
                             driver, folder],
                            check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--case", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps({"ours": case_ours, "bare": case_bare}[args.case[0]](*args.case[1:])))
        return 0

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        create_table()
        load_rows(folder, args.rows)
        print(f"loaded {args.rows} + {args.rows // 4} rows into {DATABASE} in {time.perf_counter() - started:.1f} s",
              flush=True)

        # Interleaved, so that a slow spell of the machine hits every contender alike.
        timings: dict[str, list] = {"batch": [], "quick": [], "bare": [], "ours": []}
        for _ in range(args.repeat):
            timings["batch"].append(cli_seconds(DAY, quick=False))
            timings["quick"].append(cli_seconds(DAY, quick=True))
            timings["bare"].append(run_ours(DAY, "mysqldb", folder, case="bare"))
            timings["ours"].append(run_ours(DAY, "mysqldb", folder))
        fallback = run_ours(DAY, "pymysql", folder)
        small = run_ours(SMALL_DAY, "mysqldb", folder)
    fastest = lambda runs: min(runs, key=lambda r: r["usage"]["wall_seconds"])  # noqa: E731
    ours, bare = fastest(timings["ours"]), fastest(timings["bare"])
    assert ours["rows"] == fallback["rows"] == bare["rows"] == args.rows and small["rows"] == args.rows // 4

    rate = args.rows / ours["usage"]["wall_seconds"]
    bare_rate = args.rows / bare["usage"]["wall_seconds"]
    quick_rate, batch_rate = args.rows / min(timings["quick"]), args.rows / min(timings["batch"])
    ratio = rate / bare_rate
    passed = ratio >= 0.80
    print(f"| {args.rows:,} rows | rows/s | ours / it |\n|---|---|---|\n"
          f"| ours (raw_tickets' path: mysqlclient, Arrow, Parquet file) | {rate:,.0f} | 1.00 |\n"
          f"| bare mysqlclient fetch into Arrow (no file) | {bare_rate:,.0f} | {ratio:.2f} |\n"
          f"| mariadb --quick > /dev/null | {quick_rate:,.0f} | {rate / quick_rate:.2f} |\n"
          f"| mariadb --batch > /dev/null | {batch_rate:,.0f} | {rate / batch_rate:.2f} |", flush=True)
    report(f"export {args.rows} rows (mysqlclient) vs a bare mysqlclient fetch into Arrow", {
        "ours_rows/s": rate, "bare_rows/s": bare_rate, "quick_rows/s": quick_rate, "batch_rows/s": batch_rate,
        "ours_cpu_cores": ours["usage"]["cpu_seconds"] / ours["usage"]["wall_seconds"],
        "bare_cpu_cores": bare["usage"]["cpu_seconds"] / bare["usage"]["wall_seconds"],
        "ratio_vs_quick": rate / quick_rate, "ratio_vs_batch": rate / batch_rate}, ratio, 0.80, passed)
    print(f"  PyMySQL fallback: {args.rows / fallback['usage']['wall_seconds']:.3g} rows/s, "
          f"ratio to the bare fetch {args.rows / fallback['usage']['wall_seconds'] / bare_rate:.3f}", flush=True)

    grew = {name: r["usage"]["peak_rss_mb"] - r["rss_before_mb"] for name, r in (("small", small), ("full", ours))}
    bounded = grew["full"] <= 1.25 * grew["small"] + 16
    print(f"  memory: peak RSS {small['usage']['peak_rss_mb']:.0f} MB for {args.rows // 4} rows "
          f"(+{grew['small']:.0f} MB during the export), {ours['usage']['peak_rss_mb']:.0f} MB for {args.rows} rows "
          f"(+{grew['full']:.0f} MB): {'bounded by the batch and row-group size' if bounded else 'GROWS WITH THE DAY'}",
          flush=True)
    return 0 if passed and bounded else 1


if __name__ == "__main__":
    sys.exit(main())
