"""Dify inference at the rate limit: achieved rate vs min(C / L, R / 60), client CPU and memory.

    .venv/bin/python benchmarks/inference_throughput.py            # the two standard scenarios + 429 storm
    .venv/bin/python benchmarks/inference_throughput.py --seed     # also the seed scenario (5,000 × 3 s, C = 50)

The Dify emulator runs in its own process, so its CPU is not counted as ours.
"""

from __future__ import annotations

import argparse
import math
import sys

import httpx

from benchmarks._harness import emulator_process, measured, report
from dify_pipeline.resources.dify import DifyRequest, DifyResource

KEY = "app-benchmark"


def records(count: int) -> list[DifyRequest]:
    return [DifyRequest(f"r{i}", {"subject": f"订单 {i} 物流延迟", "body": f"第 {i} 号工单: 快递三天没有更新"})
            for i in range(count)]


def run(url: str, count: int, **client) -> tuple[dict, dict, object]:
    resource = DifyResource(base_url=url, api_key=KEY, backoff_initial_seconds=0.2, **client)
    outcomes = {"ok": 0, "failed": 0}

    def on_result(result):
        outcomes["ok" if result.succeeded else "failed"] += 1

    with measured() as usage:
        counters = resource.run_all(records(count), on_result)
    return outcomes, counters, usage


def server_stats(url: str) -> dict:
    return httpx.get(f"{url.removesuffix('/v1')}/_emulator/stats").json()


def throughput(name: str, count: int, concurrency: int, latency_s: float, sigma: float, rpm: int | None) -> bool:
    config = {"apps": [{"api_key": KEY}], "latency_ms": latency_s * 1000, "latency_sigma": sigma, "seed": 1,
              "server_worker_connections": None}  # workers enough: the cap has its own scenario (pay_once.py)
    mean_latency = latency_s * math.exp(sigma**2 / 2)  # lognormal mean from its median
    bound = min(concurrency / mean_latency, (rpm or math.inf) / 60)
    with emulator_process("dify_pipeline_dev.emulators.dify", config) as url:
        outcomes, counters, usage = run(url, count, max_concurrency=concurrency, requests_per_minute=rpm)
    rate = outcomes["ok"] / usage.wall_seconds
    ratio = rate / bound
    passed = ratio >= 0.95 and outcomes["failed"] == 0
    report(name, {"records": count, "seconds": usage.wall_seconds, "rate/s": rate, "bound/s": bound,
                  "client_cpu_cores": usage.cpu_cores, "peak_rss_mb": usage.peak_rss_mb,
                  "attempts": counters["http_attempts"]}, ratio, 0.95, passed)
    return passed


def throttled(count: int, client_concurrency: int, server_limit: int, latency_s: float) -> bool:
    """Dify's per-app limit below ours: goodput vs the server's limit, and attempts per record."""
    config = {"apps": [{"api_key": KEY, "max_active_requests": server_limit}], "latency_ms": latency_s * 1000,
              "seed": 1, "server_worker_connections": None}
    bound = server_limit / latency_s
    with emulator_process("dify_pipeline_dev.emulators.dify", config) as url:
        outcomes, counters, usage = run(url, count, max_concurrency=client_concurrency)
        stats = server_stats(url)
    goodput = outcomes["ok"] / usage.wall_seconds
    attempts_per_record = counters["http_attempts"] / count
    ratio = goodput / bound
    passed = ratio >= 0.90 and attempts_per_record <= 1.2 and outcomes["failed"] == 0
    report(f"429-storm (server limit {server_limit} < client {client_concurrency})",
           {"records": count, "seconds": usage.wall_seconds, "goodput/s": goodput, "server_bound/s": bound,
            "attempts_per_record": attempts_per_record, "rejected": stats["rejected_concurrency"],
            "max_active_on_server": stats["max_active_runs"], "client_cpu_cores": usage.cpu_cores}, ratio, 0.90, passed)
    return passed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--seed", action="store_true", help="also run the seed scenario: 5,000 × 3 s with 50 in flight")
    args = parser.parse_args()
    results = [
        throughput("C=50, L=0.2 s lognormal, R unlimited", args.records, 50, 0.2, 0.25, None),
        throughput("C=50, L=0.2 s lognormal, R=3000/min", args.records, 50, 0.2, 0.25, 3000),
        throttled(args.records, 50, 20, 0.2),
    ]
    if args.seed:
        results.append(throughput("seed: 5,000 tickets × 3 s, C=50", 5000, 50, 3.0, 0.0, None))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
