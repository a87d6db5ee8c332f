"""`make demo`: one day end to end on embedded defaults, then a summary of what happened.

A generated SQLite source of a few thousand tickets, the Dify and Elasticsearch emulators on loopback,
Parquet in a local folder; the same code and definitions as production, only the environment differs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

DEMO_TIMEZONE = "Asia/Shanghai"
DEMO_KEY = "app-demo-key"  # the emulator's key; a real one comes from the environment, never from code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dify_pipeline.demo", description=__doc__)
    parser.add_argument("--tickets", type=int, default=3000, help="tickets to generate for the day")
    parser.add_argument("--output", default="demo_output", help="folder for the source, outputs and instance")
    parser.add_argument("--latency-ms", type=float, default=40.0, help="median latency of the emulated Dify app")
    args = parser.parse_args(argv)

    # The partitions' time zone is read when the definitions are imported: set it first.
    os.environ["PIPELINE_TIMEZONE"] = DEMO_TIMEZONE
    from dagster import DagsterInstance

    from dify_pipeline.definitions import build_definitions
    from dify_pipeline.demo.sample_data import create_source_table, generate_tickets, insert_tickets
    from dify_pipeline.emulators.dify import DifyApp, DifyEmulator, DifyEmulatorConfig, Fault
    from dify_pipeline.emulators.elasticsearch import ElasticsearchEmulator
    from dify_pipeline.emulators.server import serve_in_thread

    import sqlalchemy as sa

    output = Path(args.output).resolve()
    if output.exists():
        shutil.rmtree(output)
    (output / "dagster_home").mkdir(parents=True)
    (output / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # local SQLite storage
    day = datetime.now(ZoneInfo(DEMO_TIMEZONE)).date() - timedelta(days=1)

    print(f"Generating {args.tickets} tickets for {day} ({DEMO_TIMEZONE}) in SQLite ...")
    source = output / "source.db"
    engine = sa.create_engine(f"sqlite:///{source}")
    tickets = generate_tickets(day, count=args.tickets, seed=7, timezone=DEMO_TIMEZONE)
    create_source_table(engine, "tickets")
    insert_tickets(engine, "tickets", tickets)
    engine.dispose()

    # A realistic app: some latency spread, a few throttles and flaky gateway answers to retry through.
    dify = DifyEmulator(DifyEmulatorConfig(
        apps=[DifyApp(api_key=DEMO_KEY)], latency_ms=args.latency_ms, latency_sigma=0.4,
        faults=[Fault(kind="http_429", first_n=3, retry_after=1), Fault(kind="http_502_html", probability=0.005)],
    ))
    es = ElasticsearchEmulator()
    with serve_in_thread(dify.app) as dify_server, serve_in_thread(es.app) as es_server:
        demo_environment = {
            "PIPELINE_TIMEZONE": DEMO_TIMEZONE,
            "DAGSTER_HOME": str(output / "dagster_home"),
            "SOURCE_DATABASE_URL": f"sqlite:///{source}",
            "SOURCE_TIMEZONE": DEMO_TIMEZONE,
            "DIFY_BASE_URL": f"{dify_server.url}/v1",
            "DIFY_API_KEY": DEMO_KEY,
            "DIFY_MAX_CONCURRENCY": "32",
            "OUTPUT_PARQUET_URL": str(output / "parquet"),
            "PIPELINE_STORAGE_URL": str(output / "stages"),
            "RESULT_CACHE_URL": f"sqlite:///{output / 'result_cache.sqlite'}",
            "ELASTICSEARCH_URL": es_server.url,
        }
        os.environ.update(demo_environment)
        # What `dagster dev` needs to load the code location afterwards, to browse the demo's history.
        (output / "demo.env").write_text("".join(f"{k}={v}\n" for k, v in demo_environment.items()))
        print(f"Dify emulator on {dify_server.url}/v1, Elasticsearch emulator on {es_server.url}")
        print(f"Materializing partition {day} ...")
        started = time.monotonic()
        with DagsterInstance.get() as instance:
            job = build_definitions().resolve_job_def("daily_enrichment")
            result = job.execute_in_process(partition_key=day.isoformat(), instance=instance, raise_on_error=False)
        elapsed = time.monotonic() - started
        _print_summary(result, day, output, elapsed, dify.stats(), es.documents(os.environ.get("ELASTICSEARCH_INDEX", "tickets_enriched")))
    return 0 if result.success else 1


def _metadata(result, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        if event.asset_key.path == [asset]:
            return {k: v.value for k, v in event.materialization.metadata.items()}
    return {}


def _print_summary(result, day: date, output: Path, elapsed: float, dify_stats: dict, documents: dict) -> None:
    raw, clean = _metadata(result, "raw_tickets"), _metadata(result, "clean_tickets")
    enriched, parquet, es = _metadata(result, "enriched_tickets"), _metadata(result, "tickets_parquet"), _metadata(result, "tickets_elasticsearch")
    line = "-" * 72
    print(line)
    print(f"{'succeeded' if result.success else 'FAILED'}: partition {day} in {elapsed:.1f} s")
    print(line)
    print(f"raw_tickets           {raw.get('rows', '-'):>7} rows exported from the source")
    print(f"clean_tickets         {clean.get('rows', '-'):>7} rows  (quarantined {clean.get('quarantined', '-')}, "
          f"duplicates removed {clean.get('duplicates_removed', '-')}, PII masked {clean.get('pii_masked', {})})")
    print(f"  quarantine reasons  {clean.get('quarantine_reasons', {})}")
    print(f"enriched_tickets      {enriched.get('rows', '-'):>7} rows  (succeeded {enriched.get('succeeded', '-')}, "
          f"failed {enriched.get('failed', '-')}, cache hits {enriched.get('cache_hits', '-')})")
    print(f"  Dify calls          {enriched.get('requests_sent', '-')} records sent, {enriched.get('http_attempts', '-')} HTTP attempts, "
          f"{enriched.get('retries', '-')} retries, {enriched.get('throttled', '-')} throttled; "
          f"latency p50 {enriched.get('latency_p50_ms', '-')} ms, p95 {enriched.get('latency_p95_ms', '-')} ms; "
          f"{enriched.get('total_tokens', '-')} tokens")
    print(f"  failures by code    {enriched.get('failures_by_code', {})}")
    print(f"  categories          {enriched.get('categories', {})}")
    print(f"tickets_parquet       {parquet.get('rows', '-'):>7} rows  → {parquet.get('path', '-')}")
    print(f"tickets_elasticsearch {es.get('rows', '-'):>7} docs  → index {es.get('index', '-')} "
          f"({len(documents)} documents held by the emulator)")
    print(line)
    print("Next:")
    query = f"SELECT dt, category, count(*) AS n FROM read_parquet('{output}/parquet/*/*.parquet', hive_partitioning=true) GROUP BY ALL ORDER BY n DESC"
    print(f"  query the day:  .venv/bin/python -c \"import duckdb; duckdb.sql(\\\"{query}\\\").show()\"")
    print(f"  browse the run: env $(cat {output / 'demo.env'}) .venv/bin/dagster dev -w workspace.yaml")
    print("                  (runs, metadata and checks of the demo; to run days for real, set the variables of")
    print("                  .env.example to your services and use dagster.yaml's PostgreSQL instance: see README)")
    if not result.success:
        for event in result.all_events:
            if event.is_failure:
                print(f"  failure: {event.message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
