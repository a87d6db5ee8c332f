"""`make demo`: one day end to end on embedded defaults, then a summary of what happened.

A generated SQLite source of a few thousand tickets, the Dify and Elasticsearch emulators on loopback,
Parquet in a local folder; the same code and definitions as production, only the environment differs.
It prints each step as it ends and the steps' own messages (progress of the Dify calls, warnings); Dagster's
event log stays in the run, for `dagster dev` on the demo's folder.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

DEMO_TIMEZONE = "Asia/Shanghai"
DEMO_KEY = "app-demo-key"  # the emulator's key; a real one comes from the environment, never from code
MISSING = "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dify_pipeline_dev.demo", description=__doc__)
    parser.add_argument("--tickets", type=int, default=3000, help="tickets to generate for the day")
    parser.add_argument("--output", default="demo_output", help="folder for the source, outputs and instance")
    parser.add_argument("--latency-ms", type=float, default=40.0, help="median latency of the emulated Dify app")
    parser.add_argument("--days", type=int, default=1, help="days to run, one run each, ending yesterday")
    parser.add_argument("--block-day", type=int, default=0, metavar="N",
                        help="make the app fail the refund tickets of the Nth day, so its failure-rate check "
                             "blocks it (0: none)")
    args = parser.parse_args(argv)

    yesterday = datetime.now(ZoneInfo(DEMO_TIMEZONE)).date() - timedelta(days=1)
    days = [yesterday - timedelta(days=n) for n in reversed(range(args.days))]
    # The partitions (zone, first day) are read when the definitions are imported: set them first. The first
    # partition is the demo's first day, so the UI's partition bars and plots show the demo's days only.
    os.environ["PIPELINE_TIMEZONE"] = DEMO_TIMEZONE
    os.environ["PIPELINE_START_DATE"] = days[0].isoformat()
    import sqlalchemy as sa
    from dagster import DagsterInstance, LoggerDefinition

    from dify_pipeline.definitions import build_definitions
    from dify_pipeline.infer.assets import BLOCKED_TAG
    from dify_pipeline_dev.demo.sample_data import create_source_table, generate_tickets, insert_tickets
    from dify_pipeline_dev.emulators.dify import DifyApp, DifyEmulator, DifyEmulatorConfig, Fault
    from dify_pipeline_dev.emulators.elasticsearch import ElasticsearchEmulator
    from dify_pipeline_dev.emulators.server import serve_in_thread

    output = Path(args.output).resolve()
    if output.exists():
        shutil.rmtree(output)
    (output / "dagster_home").mkdir(parents=True)
    (output / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # local SQLite storage
    source = output / "source.db"
    engine = sa.create_engine(f"sqlite:///{source}")
    create_source_table(engine, "tickets")
    for number, day in enumerate(days):
        print(f"Generating {args.tickets} tickets for {day} ({DEMO_TIMEZONE}) in SQLite ...")
        tickets = generate_tickets(day, count=args.tickets, seed=7 + number, timezone=DEMO_TIMEZONE)
        tickets["id"] = tickets["id"] + number * 10_000_000  # every day's ids its own
        insert_tickets(engine, "tickets", tickets)
    engine.dispose()

    # A realistic app: some latency spread, a few throttles and flaky gateway answers to retry through.
    demo_app = DifyApp(api_key=DEMO_KEY)  # one published version of the app (workflow_id) for every day

    def app(*more_faults: Fault) -> DifyEmulatorConfig:
        return DifyEmulatorConfig(
            apps=[demo_app], latency_ms=args.latency_ms, latency_sigma=0.4,
            faults=[Fault(kind="http_429", first_n=3, retry_after=1), Fault(kind="http_502_html", probability=0.005),
                    *more_faults])

    dify = DifyEmulator(app())
    es = ElasticsearchEmulator()
    with serve_in_thread(dify.app) as dify_server, serve_in_thread(es.app) as es_server:
        demo_environment = {
            "PIPELINE_TIMEZONE": DEMO_TIMEZONE,
            "PIPELINE_START_DATE": days[0].isoformat(),
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
        job = build_definitions().resolve_job_def("daily_enrichment").with_logger_defs(
            {"progress": LoggerDefinition(_progress_logger, description="steps as they end, and their messages")})
        succeeded = True
        with DagsterInstance.get() as instance:
            for number, day in enumerate(days, start=1):
                dify.configure(app(Fault(kind="failed_run", match="退款")) if number == args.block_day else app())
                print(f"Materializing partition {day} ...")
                started = time.monotonic()
                result = job.execute_in_process(partition_key=day.isoformat(), instance=instance,
                                                raise_on_error=False, run_config={"loggers": {"progress": {}}})
                elapsed = time.monotonic() - started
                blocked_by = instance.get_run_by_id(result.run_id).tags.get(BLOCKED_TAG)
                _print_summary(result, day, output, elapsed, blocked_by,
                               es.documents(os.environ.get("ELASTICSEARCH_INDEX", "tickets_enriched")))
                succeeded = succeeded and result.success and not blocked_by
        _print_next(output)
    return 0 if succeeded else 1


class _ProgressHandler(logging.Handler):
    """Each step as it ends, and the steps' own messages at INFO and above; no Dagster events otherwise."""

    STEP_ENDS = {"STEP_SUCCESS": "done", "STEP_FAILURE": "FAILED", "STEP_SKIPPED": "skipped"}

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        event, step = meta.get("dagster_event"), meta.get("step_key") or "run"
        if event is None and record.levelno >= logging.INFO:
            print(f"  {step}: {meta.get('orig_message', record.getMessage())}", flush=True)
        elif event is not None and event.event_type_value in self.STEP_ENDS:
            print(f"  {step}: {self.STEP_ENDS[event.event_type_value]}", flush=True)


def _progress_logger(_init_context) -> logging.Logger:
    logger = logging.Logger("dify_pipeline_dev.demo", level=logging.DEBUG)  # step ends are DEBUG events
    logger.addHandler(_ProgressHandler())
    return logger


def _metadata(result, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        if event.asset_key.path == [asset]:
            return {k: v.value for k, v in event.materialization.metadata.items()}
    return {}


class _Figures:
    """An asset's metadata in this run; a key it does not have reads MISSING (a step that did not run, or a key
    renamed under the demo: the demo test fails on MISSING in a day that succeeded)."""

    def __init__(self, result, asset: str) -> None:
        self.metadata = _metadata(result, asset)

    def __getitem__(self, key: str):
        return self.metadata.get(key, MISSING)


def _print_summary(result, day: date, output: Path, elapsed: float, blocked_by: str | None, documents: dict) -> None:
    raw, clean = _Figures(result, "raw_tickets"), _Figures(result, "clean_tickets")
    enriched, parquet = _Figures(result, "enriched_tickets"), _Figures(result, "tickets_parquet")
    es = _Figures(result, "tickets_elasticsearch")
    line = "-" * 72
    print(line)
    outcome = f"BLOCKED by {blocked_by}, not published" if blocked_by else "succeeded" if result.success else "FAILED"
    print(f"{outcome}: partition {day} in {elapsed:.1f} s")
    print(line)
    print(f"raw_tickets           {raw['rows']:>7} rows exported from the source")
    print(f"clean_tickets         {clean['rows']:>7} rows  (quarantined {clean['quarantined']}, "
          f"duplicates removed {clean['duplicates_removed']}, PII masked {clean['pii_masked']})")
    print(f"  quarantine reasons  {clean['quarantine_reasons']}")
    print(f"enriched_tickets      {enriched['rows']:>7} rows  (succeeded {enriched['succeeded']}, "
          f"failed {enriched['failed']}, cache hits {enriched['cache_hits']})")
    print(f"  Dify calls          {enriched['requests_sent']} records sent, {enriched['http_attempts']} HTTP attempts, "
          f"{enriched['retries']} retries, {enriched['throttled']} throttled; "
          f"latency p50 {enriched['latency_p50_ms']} ms, p95 {enriched['latency_p95_ms']} ms; "
          f"{enriched['total_tokens']} tokens")
    if enriched.metadata.get("cost_priced_by_dify_answers") or enriched.metadata.get("cost_is_estimate"):
        print(f"  cost                {enriched['cost_day']} {enriched['cost_currency']} for the day"
              f"{' (estimated from tokens)' if enriched['cost_is_estimate'] else ''}, "
              f"{enriched['cost_spent_this_run']} spent by this run")
    else:  # a blocking workflow run carries tokens, no price
        print("  cost                no price from Dify (stream the runs, or give the contract's token prices)")
    print(f"  failures by code    {enriched['failures_by_code']}")
    if enriched["labels"] is MISSING:
        print(f"  labels              {MISSING}")
    for output_name, counts in enriched.metadata.get("labels", {}).items():  # one line per label output
        print(f"  {output_name:<19} {counts}")
    print(f"tickets_parquet       {parquet['rows']:>7} rows  → {parquet['path']}")
    print(f"tickets_elasticsearch {es['rows']:>7} docs  → index {es['index']} "
          f"({len(documents)} documents held by the emulator)")
    print(line)
    if not result.success:
        for event in result.all_events:
            if event.is_failure:
                print(f"  failure: {event.message}", file=sys.stderr)


def _print_next(output: Path) -> None:
    print("Next:")
    query = (f"SELECT dt, category, count(*) AS n FROM read_parquet('{output}/parquet/*/*.parquet', "
             "hive_partitioning=true) GROUP BY ALL ORDER BY n DESC")
    print(f"  query the day:  .venv/bin/python -c \"import duckdb; duckdb.sql(\\\"{query}\\\").show()\"")
    print(f"  browse the run: env $(cat {output / 'demo.env'}) .venv/bin/dagster dev -w workspace.yaml")
    print("                  (runs, metadata and checks of the demo; to run days for real, set the variables of")
    print("                  .env.example to your services and use dagster.yaml's PostgreSQL instance: see README)")


if __name__ == "__main__":
    sys.exit(main())
