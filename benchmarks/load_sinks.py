"""Loading a generated enriched day into both sinks on loopback, next to the bare libraries doing the same work.

    .venv/bin/python -m benchmarks.load_sinks                  # 200,000 rows
    .venv/bin/python -m benchmarks.load_sinks --rows 1000000 --sinks parquet   # memory: streamed vs whole day

The day is written as enriched_tickets writes it (shards of 500 rows, local stage storage). Then, each in a
process of its own (so its peak memory is its own):

- parquet, ours: `tickets_parquet` materialized in process (read the shards, conform, stream to S3, verify,
  clean up)
- parquet, raw:  pyarrow reading the same shards (`pyarrow.dataset`, multithreaded) and writing the table with
  `pyarrow.parquet.write_table` to the same store, zstd; the write alone is also shown
- elasticsearch, ours: `tickets_elasticsearch` materialized in process (ensure the index, parallel bulk,
  refresh, stale deletion, count)
- elasticsearch, raw: the client's `parallel_bulk` (same threads, same chunk size) sending the same
  documents, already built in memory, to an empty index

- bulk, ours: the step's own bulk path (`SearchSink.bulk_index` over the shard files, documents built by
  `batch_documents`, `parallel_requests` workers of `streaming_bulk`) against a no-op sink
- bulk, raw: the bare client's `parallel_bulk` (same threads and chunk size) fed from a generator that reads
  the shard files and makes each row a document (`to_documents`), against the same sink

S3 is moto's server and Elasticsearch the project's emulator, each in its own process: their CPU is not ours.
The emulator is a single Python process that keeps every document and so measures mostly itself; the no-op
sink speaks the bulk wire protocol (`GET /`, `POST /_bulk` NDJSON in, one item per action out, the product
header the clients check) in `--sink-processes` pre-forked processes sharing one socket, keeps nothing, and
reports its own CPU time: it is not the bottleneck when its cores stay below what the machine has.
The bound is ours ≥ 0.80 × raw, in rows per second; each figure is the fastest of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks._harness import emulator_process, measured, report
from dify_pipeline.contract import TICKET_OUTPUTS
from dify_pipeline.schemas import CLEAN_FIELDS, ENRICHMENT_FIELDS, PIPELINE_VERSION, SHARD_FIELD, with_fields

DAY = "2026-11-20"
BUCKET = "load-benchmark"
SHARD_ROWS = 500
PARALLEL_REQUESTS = 4
CHUNK_SIZE = 1000

SUBJECTS = ["订单物流延迟", "Refund not received", "无法登录账户", "App crashes on start", "发票开具问题",
            "Wrong item delivered"]
BODIES = [
    "我的订单已经三天没有更新物流信息了，请帮忙查一下。客服电话一直占线，希望尽快处理。",
    "I was charged twice for my order and still have not received a refund after two weeks of waiting.",
    "登录时一直提示密码错误，但是我确定密码是对的，已经重置过两次，还是不行。",
    "Since the last update the app closes right after the splash screen on my phone, every single time.",
]
SUMMARIES = ["客户反映物流延迟，要求加急处理。", "Customer reports a double charge and asks for a refund.",
             "用户无法登录，已重置密码两次。", "App crashes at start after the update."]
CATEGORIES = ["物流问题", "退款", "账户登录", "技术故障", "发票", "商品错误", "其他", "投诉", "咨询", "表扬"]


def enriched_day(rows: int) -> pa.Table:
    """A day as enriched_tickets leaves it: source, clean and enrichment columns, realistic text sizes."""
    rng = np.random.default_rng(1)
    keys = np.arange(rows)
    start = datetime.fromisoformat(DAY).replace(tzinfo=UTC)
    micros = int(start.timestamp() * 1_000_000) + rng.integers(0, 86_400_000_000, rows)
    pick = lambda pool: pa.array(np.array(pool, dtype=object)[rng.integers(0, len(pool), rows)], pa.string())  # noqa: E731
    source = pa.schema([("id", pa.int64()), ("subject", pa.string()), ("body", pa.string()), ("channel", pa.string()),
                        ("customer_id", pa.int64()), ("priority", pa.string()),
                        ("created_at", pa.timestamp("us", tz="UTC")), ("updated_at", pa.timestamp("us", tz="UTC"))])
    schema = with_fields(with_fields(source, CLEAN_FIELDS), ENRICHMENT_FIELDS).append(SHARD_FIELD)
    numbers = pa.array(keys.astype(str).astype(object), pa.string())
    labels = pa.dictionary(pa.int32(), pa.string())
    body = pc.binary_join_element_wise(pick(BODIES), " 编号 ", numbers, pick(BODIES), "")
    columns = {
        "id": pa.array(keys, pa.int64()),
        "subject": pc.binary_join_element_wise(pick(SUBJECTS), numbers, " #"),
        "body": body,
        "channel": pick(["email", "web", "app", "phone"]),
        "customer_id": pa.array(rng.integers(1, 10**6, rows), pa.int64()),
        "priority": pick(["normal", "normal", "high", "low"]),
        "created_at": pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "updated_at": pa.array(micros + 3_600_000_000, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "record_key": numbers,
        "text_truncated": pa.array(np.zeros(rows, bool)),
        "pii_masked": pa.array(rng.integers(0, 3, rows), pa.int64()),
        "category": pick(CATEGORIES).dictionary_encode().cast(labels),
        "summary": pick(SUMMARIES),
        "sentiment": pick(["negative", "neutral", "positive"]).dictionary_encode().cast(labels),
        "outputs_json": pa.array(['{"category": "物流问题", "summary": "…", "sentiment": "negative"}'] * rows,
                                 pa.string()),
        "dify_status": pa.array(["succeeded"] * rows, pa.string()).dictionary_encode().cast(labels),
        "error_code": pa.nulls(rows, pa.string()),
        "error_message": pa.nulls(rows, pa.string()),
        "attempts": pa.array(np.ones(rows, np.int32)),
        "latency_ms": pa.array(rng.lognormal(6.5, 0.3, rows)),
        "total_tokens": pa.array(rng.integers(150, 600, rows), pa.int64()),
        "total_price": pa.array(rng.random(rows) / 1000),
        "currency": pa.array(["USD"] * rows, pa.string()),
        "dify_run_id": pc.binary_join_element_wise("run-", numbers, ""),
        "dify_workflow_id": pa.array(["wf-benchmark"] * rows, pa.string()),
        "cache_hit": pa.array(np.zeros(rows, bool)),
        "inputs_truncated": pa.array(np.zeros(rows, bool)),
        "enriched_at": pa.array(np.full(rows, micros.max()), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "app_identity": pa.array(["app-benchmark"] * rows, pa.string()),
        "cache_version": pa.array(["v1"] * rows, pa.string()),
        "pipeline_version": pa.array([PIPELINE_VERSION] * rows, pa.string()),
        "shard": pa.array((keys // SHARD_ROWS).astype(np.int32)),
    }
    return pa.table({f.name: columns[f.name] for f in schema}, schema=schema)


def write_stage(folder: str, rows: int) -> int:
    """The day as enriched shards under `folder`; returns the rows written."""
    from dify_pipeline.resources.storage import ObjectStorage
    from dify_pipeline.stages import shard_file

    stage = ObjectStorage(url=folder)
    table = enriched_day(rows)
    for shard, offset in enumerate(range(0, rows, SHARD_ROWS)):
        stage.write_parquet(shard_file(stage, "enriched_tickets", DAY, shard), table.schema,
                            [table.slice(offset, SHARD_ROWS)])
    return table.num_rows


# -- the cases, each run in a child process ----------------------------------------------------------


def current_rss_mb() -> float:
    """This process's resident memory now (the harness reports the peak, imports included)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def materialize(asset, resources: dict) -> dict:
    """Run the asset as Dagster runs it (in process, ephemeral instance made before the clock starts)."""
    import dagster as dg

    with dg.DagsterInstance.ephemeral() as instance:
        start_rss = current_rss_mb()
        with measured() as usage:
            result = dg.materialize([asset], partition_key=DAY, instance=instance, resources=resources)
    [event] = result.asset_materializations_for_node(asset.key.path[-1])
    return {"metadata": {key: value.value for key, value in event.metadata.items()},
            "usage": {**usage.__dict__, "start_rss_mb": start_rss}}


def case_parquet_ours(stage_url: str, s3_url: str, prefix: str) -> dict:
    import s3fs  # noqa: F401 - imported before the clock starts, as the raw case does

    from dify_pipeline.contract import tickets_contract
    from dify_pipeline.factory import steps_of
    from dify_pipeline.resources.storage import ObjectStorage

    stage = ObjectStorage(url=stage_url)
    output = ObjectStorage(url=f"s3://{BUCKET}/{prefix}", s3_endpoint_url=s3_url, s3_region="us-east-1")
    output.filesystem().ls(BUCKET)  # warm-up before the clock; the step makes its own client inside it, as raw does
    outcome = materialize(steps_of(tickets_contract())["tickets_parquet"],
                          {"stage_storage": stage, "parquet_output": output})
    return {"rows": outcome["metadata"]["rows"], "usage": outcome["usage"]}


def case_parquet_raw(stage_url: str, s3_url: str, prefix: str) -> dict:
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq
    import s3fs

    new_client = lambda: s3fs.S3FileSystem(endpoint_url=s3_url, client_kwargs={"region_name": "us-east-1"},  # noqa: E731
                                           skip_instance_cache=True)
    new_client().ls(BUCKET)  # warm-up before the clock (imports, S3's service model), as in our case
    start_rss = current_rss_mb()
    with measured() as usage:  # the same work as ours: make a client, find the shards, read them, write one object
        fs = new_client()  # a Dagster step builds its resources afresh: ours makes its client inside the clock too
        shards = ds.dataset(f"{stage_url}/enriched_tickets/dt={DAY}", format="parquet")
        table = shards.to_table().drop_columns(["shard"])  # pyarrow's own multithreaded reader
        started = time.perf_counter()
        pq.write_table(table, f"{BUCKET}/{prefix}/dt={DAY}/part-00000.parquet", filesystem=fs, compression="zstd")
        write_seconds = time.perf_counter() - started
    return {"rows": table.num_rows, "usage": {**usage.__dict__, "start_rss_mb": start_rss},
            "write_seconds": write_seconds}


def case_elasticsearch_ours(stage_url: str, es_url: str, index: str) -> dict:
    from dify_pipeline.contract import tickets_contract
    from dify_pipeline.factory import steps_of
    from dify_pipeline.resources.search import SearchCluster
    from dify_pipeline.resources.storage import ObjectStorage

    es = SearchCluster(url=es_url, index=index, parallel_requests=PARALLEL_REQUESTS, chunk_size=CHUNK_SIZE)
    outcome = materialize(steps_of(tickets_contract())["tickets_elasticsearch"],
                          {"elasticsearch": es, "stage_storage": ObjectStorage(url=stage_url)})
    assert outcome["metadata"]["rejected"] == 0
    return {"rows": outcome["metadata"]["documents_for_day"], "usage": outcome["usage"],
            "bulk_seconds": outcome["metadata"]["seconds"]}


def case_elasticsearch_raw(stage_url: str, es_url: str, index: str) -> dict:
    import pyarrow.dataset as ds
    from elasticsearch import Elasticsearch, helpers

    from dify_pipeline.publish.documents import MAPPING_VERSION, index_mapping, to_documents

    table = ds.dataset(f"{stage_url}/enriched_tickets/dt={DAY}", format="parquet").to_table()
    mapping = index_mapping(["subject", "body"], ["created_at", "updated_at"], TICKET_OUTPUTS)
    physical = f"{index}-v{MAPPING_VERSION}"
    documents = list(to_documents(table.to_pylist(), DAY, "raw", set(mapping["properties"]), physical))
    del table
    client = Elasticsearch(es_url, request_timeout=60)
    client.indices.create(index=physical, mappings=mapping)
    start_rss = current_rss_mb()
    with measured() as usage:
        started = time.perf_counter()
        for _ in helpers.parallel_bulk(client, documents, thread_count=PARALLEL_REQUESTS, chunk_size=CHUNK_SIZE,
                                       raise_on_error=True):
            pass
        bulk_seconds = time.perf_counter() - started
        client.indices.refresh(index=physical)
    rows = client.count(index=physical)["count"]
    return {"rows": rows, "usage": {**usage.__dict__, "start_rss_mb": start_rss}, "bulk_seconds": bulk_seconds}


def case_bulk_ours(stage_url: str, sink_url: str, index: str) -> dict:
    """What tickets_elasticsearch does between ensuring the index and the counts: its bulk load, as the step
    calls it (`_load_day`'s `documents_of` and `sink.bulk_index`)."""
    from dify_pipeline.publish.documents import MAPPING_VERSION, batch_documents, index_mapping
    from dify_pipeline.resources.search import SearchCluster
    from dify_pipeline.resources.storage import ObjectStorage
    from dify_pipeline.stages import day_folder

    stage = ObjectStorage(url=stage_url)
    mapped_fields = set(index_mapping(["subject", "body"], ["created_at", "updated_at"], TICKET_OUTPUTS)["properties"])
    physical = f"{index}-v{MAPPING_VERSION}"
    start_rss = current_rss_mb()
    with measured() as usage:
        cluster = SearchCluster(url=sink_url, index=index, parallel_requests=PARALLEL_REQUESTS, chunk_size=CHUNK_SIZE)
        with cluster.connect() as sink:
            shard_paths = stage.list_files(day_folder(stage, "enriched_tickets", DAY))

            def documents_of(shard_path: str):
                for batch in stage.iter_parquet_batches(shard_path, sink.bulk_settings.chunk_size, use_threads=False):
                    yield from batch_documents(batch, DAY, "ours", mapped_fields, physical)

            outcome = sink.bulk_index(shard_paths, documents_of)
    assert outcome.complete and not outcome.rejected, outcome
    return {"rows": outcome.indexed, "usage": {**usage.__dict__, "start_rss_mb": start_rss}}


def case_bulk_raw(stage_url: str, sink_url: str, index: str) -> dict:
    """The bare client fed from a generator: shard files read one by one, each row a document."""
    import pyarrow.parquet as pq
    from elasticsearch import Elasticsearch, helpers

    from dify_pipeline.publish.documents import MAPPING_VERSION, index_mapping, to_documents
    from dify_pipeline.resources.storage import ObjectStorage
    from dify_pipeline.stages import day_folder

    stage = ObjectStorage(url=stage_url)
    mapped_fields = set(index_mapping(["subject", "body"], ["created_at", "updated_at"], TICKET_OUTPUTS)["properties"])
    physical = f"{index}-v{MAPPING_VERSION}"
    start_rss = current_rss_mb()
    with measured() as usage:
        client = Elasticsearch(sink_url, request_timeout=60)
        paths = stage.list_files(day_folder(stage, "enriched_tickets", DAY))
        documents = (document for path in paths
                     for document in to_documents(pq.read_table(path).to_pylist(), DAY, "raw", mapped_fields, physical))
        rows = sum(1 for ok, _ in helpers.parallel_bulk(client, documents, thread_count=PARALLEL_REQUESTS,
                                                        chunk_size=CHUNK_SIZE, raise_on_error=True) if ok)
        client.close()
    return {"rows": rows, "usage": {**usage.__dict__, "start_rss_mb": start_rss}}


# -- a no-op bulk sink: the wire protocol, nothing kept --------------------------------------------------


def _sink_handler():
    from http.server import BaseHTTPRequestHandler

    import orjson

    info = orjson.dumps({"name": "noop", "cluster_name": "noop", "cluster_uuid": "noop",
                         "tagline": "You Know, for Search",
                         "version": {"number": "9.1.0", "build_flavor": "default", "build_type": "docker",
                                     "lucene_version": "10.2.2", "minimum_wire_compatibility_version": "8.19.0",
                                     "minimum_index_compatibility_version": "8.0.0"}})

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _answer(self, body: bytes, status: int = 200) -> None:
            accept = self.headers.get("Accept", "")
            self.send_response(status)
            self.send_header("X-Elastic-Product", "Elasticsearch")
            self.send_header("Content-Type", accept if "compatible-with" in accept else "application/json")
            self.send_header("Content-Length", str(len(body)))
            self._headers_buffer += [b"\r\n", body]  # one write: no small segment waiting for a delayed ACK
            self.flush_headers()

        def do_GET(self) -> None:
            self._answer(info)

        do_HEAD = do_GET


        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if "_bulk" not in self.path:
                self._answer(b'{"acknowledged":true}')
                return
            lines = body.split(b"\n")
            items, position = [], 0
            while position < len(lines):
                if not lines[position]:
                    position += 1
                    continue
                action = orjson.loads(lines[position])
                [(kind, meta)] = action.items()
                items.append({kind: {"_index": meta.get("_index"), "_id": meta.get("_id"), "status": 201,
                                     "result": "created", "_version": 1}})
                position += 1 if kind == "delete" else 2
            self._answer(orjson.dumps({"took": 0, "errors": False, "items": items}))

        do_PUT = do_POST

    return Handler


def _serve(sock, handler, cpu_file: str) -> None:
    import resource
    import signal
    from http.server import ThreadingHTTPServer

    server = ThreadingHTTPServer(sock.getsockname(), handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock

    def stop(*_):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with open(cpu_file, "a") as handle:
            handle.write(f"{usage.ru_utime + usage.ru_stime}\n")
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()


class NoopSink:
    """The no-op sink in `processes` pre-forked processes accepting on one loopback socket."""

    def __init__(self, processes: int) -> None:
        import multiprocessing

        self.cpu_file = tempfile.mktemp(prefix="noop-sink-cpu-")
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        context = multiprocessing.get_context("fork")
        self.workers = [context.Process(target=_serve, args=(self.sock, _sink_handler(), self.cpu_file), daemon=True)
                        for _ in range(processes)]
        for worker in self.workers:
            worker.start()

    def stop(self) -> float:
        """Stop the workers; returns their CPU seconds."""
        for worker in self.workers:
            worker.terminate()
        for worker in self.workers:
            worker.join(timeout=10)
        self.sock.close()
        try:
            with open(self.cpu_file) as handle:
                return sum(float(line) for line in handle if line.strip())
        finally:
            os.remove(self.cpu_file)


def bulk(stage_url: str, rows: int, repeat: int, processes: int) -> bool:
    results = {}
    for name in ("bulk_raw", "bulk_ours"):
        runs = []
        for _ in range(repeat):
            sink = NoopSink(processes)
            try:
                run = run_case(name, stage_url, sink.url, name)
            finally:
                sink_cpu = sink.stop()
            run["sink_cpu_seconds"] = sink_cpu
            runs.append(run)
        results[name] = min(runs, key=lambda run: run["usage"]["wall_seconds"])
    ours, raw = results["bulk_ours"], results["bulk_raw"]
    passed = compare(f"bulk load, no-op sink ({processes} processes, {PARALLEL_REQUESTS} requests in flight)", rows,
                     ours, raw)
    for name, run in (("ours", ours), ("raw", raw)):
        print(f"  {name}: the sink used {run['sink_cpu_seconds'] / run['usage']['wall_seconds']:.2f} cores "
              f"(of {os.cpu_count()}), the client {run['usage']['cpu_seconds'] / run['usage']['wall_seconds']:.2f}",
              flush=True)
    return passed


CASES = {name.removeprefix("case_"): fn for name, fn in globals().items() if name.startswith("case_")}


def run_case(name: str, *args: str) -> dict:
    """Run one case in a fresh interpreter; returns what it printed (rows and usage)."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.load_sinks", "--case", name, *args],
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"case {name} failed:\n{done.stderr[-3000:]}")
    output = done.stdout
    return json.loads(output.strip().splitlines()[-1])


def best_of(repeat: int, name: str, *args: str, before=lambda: None) -> dict:
    """The fastest of `repeat` runs: other load on the machine only ever slows a run down."""
    runs = []
    for _ in range(repeat):
        before()
        runs.append(run_case(name, *args))
    return min(runs, key=lambda run: run["usage"]["wall_seconds"])


def listening(url: str) -> str:
    """Wait until the server behind `url` accepts connections (the emulator prints its URL first)."""
    host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=0.5).close()
            return url
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each case; the fastest counts")
    parser.add_argument("--sinks", choices=["both", "parquet", "elasticsearch", "bulk"], default="both",
                        help="both: parquet and elasticsearch (emulator) and bulk (no-op sink)")
    parser.add_argument("--sink-processes", type=int, default=2, help="processes of the no-op bulk sink")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(CASES[args.case](*args.args)))
        return 0

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "benchmark")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "benchmark")
    results = []
    with tempfile.TemporaryDirectory() as folder:
        stage_url = f"{folder}/stages"
        rows = write_stage(stage_url, args.rows)
        print(f"{rows} enriched rows in {rows // SHARD_ROWS} shards under {stage_url}", flush=True)

        if args.sinks in ("both", "parquet"):
            results.append(parquet(stage_url, rows, args.repeat))
        if args.sinks in ("both", "elasticsearch"):
            results.append(elasticsearch(stage_url, rows, args.repeat))
        if args.sinks in ("both", "bulk"):
            results.append(bulk(stage_url, rows, args.repeat, args.sink_processes))
    return 0 if all(results) else 1


def parquet(stage_url: str, rows: int, repeat: int) -> bool:
    from dify_pipeline_tests.integration.services import S3Server  # moto's server in its own process

    s3 = S3Server()
    try:
        s3.client().create_bucket(Bucket=BUCKET)
        raw = best_of(repeat, "parquet_raw", stage_url, s3.url, "raw")
        ours = best_of(repeat, "parquet_ours", stage_url, s3.url, "ours")
    finally:
        s3.stop()
    passed = compare("parquet → S3 (moto)", rows, ours, raw)
    write_only = rows / raw["write_seconds"]
    print(f"  raw write alone (table already in memory): {write_only:.3g} rows/s; "
          f"ours / that: {rows / ours['usage']['wall_seconds'] / write_only:.3f}", flush=True)
    return passed


def elasticsearch(stage_url: str, rows: int, repeat: int) -> bool:
    with emulator_process("dify_pipeline_dev.emulators.elasticsearch") as es_url:
            listening(es_url)
            reset = lambda: urllib.request.urlopen(urllib.request.Request(f"{es_url}/_emulator/reset", method="POST"))  # noqa: E731
            raw = best_of(repeat, "elasticsearch_raw", stage_url, es_url, "raw", before=reset)
            ours = best_of(repeat, "elasticsearch_ours", stage_url, es_url, "ours", before=reset)
    passed = compare(f"elasticsearch (emulator, {PARALLEL_REQUESTS} requests in flight)", rows, ours, raw)
    print(f"  bulk phase alone: ours {rows / ours['bulk_seconds']:.3g} rows/s, "
          f"raw {rows / raw['bulk_seconds']:.3g} rows/s, "
          f"ratio {raw['bulk_seconds'] / ours['bulk_seconds']:.3f} (the step also counts the day's documents before "
          f"and after, which the emulator does in Python over every document)", flush=True)
    return passed


def compare(name: str, rows: int, ours: dict, raw: dict) -> bool:
    assert ours["rows"] == raw["rows"] == rows, (ours["rows"], raw["rows"], rows)
    ours_rate = rows / ours["usage"]["wall_seconds"]
    raw_rate = rows / raw["usage"]["wall_seconds"]
    ratio = ours_rate / raw_rate
    report(name, {"rows": rows, "ours_rows/s": ours_rate, "raw_rows/s": raw_rate,
                  "ours_s": ours["usage"]["wall_seconds"], "raw_s": raw["usage"]["wall_seconds"],
                  "ours_peak_rss_mb": ours["usage"]["peak_rss_mb"],
                  "ours_rss_at_start_mb": ours["usage"]["start_rss_mb"],
                  "raw_peak_rss_mb": raw["usage"]["peak_rss_mb"], "raw_rss_at_start_mb": raw["usage"]["start_rss_mb"],
                  "ours_cpu_cores": ours["usage"]["cpu_seconds"] / ours["usage"]["wall_seconds"]},
           ratio, 0.80, ratio >= 0.80)
    return ratio >= 0.80


if __name__ == "__main__":
    sys.exit(main())
