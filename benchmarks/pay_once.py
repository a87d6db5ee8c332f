"""Pay once against a Dify that behaves like the real server: connection cap, failing app, 5xx, cut bodies.

    .venv/bin/python benchmarks/pay_once.py              # every scenario
    .venv/bin/python benchmarks/pay_once.py --only cap   # one of: failing, 5xx, cap, faults

Every figure comes from the emulator's own counters (paid runs, distinct inputs, runs per input). The
emulator runs in its own process; the client uses the package's default settings unless a line says otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import httpx

from benchmarks._harness import emulator_process, measured, report
from dify_pipeline.resources.dify import DifyFatalError, DifyRequest, DifyResource
from dify_pipeline.resources.run_journal import RunJournal

KEY = "app-benchmark"
EMULATOR = "dify_pipeline_dev.emulators.dify"


def records(count: int, prefix: str = "r") -> list[DifyRequest]:
    return [DifyRequest(f"{prefix}{i}", {"subject": f"订单 {i} 物流延迟", "body": f"第 {i} 号工单: 快递三天没有更新"})
            for i in range(count)]


def stats(url: str) -> dict:
    return httpx.get(f"{url.removesuffix('/v1')}/_emulator/stats").json()


def run(url: str, requests: list[DifyRequest], **client) -> tuple[dict, dict | None, object, str | None]:
    """(outcomes by error code, client counters, usage, fatal message) of one day against `url`."""
    outcomes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as folder:
        journal = RunJournal.open(f"sqlite:///{Path(folder) / 'journal.sqlite'}")
        resource = DifyResource(base_url=url, api_key=KEY, **client)
        counters, fatal = None, None
        with measured() as usage:
            try:
                def count(result) -> None:
                    code = result.error_code or "ok"
                    outcomes[code] = outcomes.get(code, 0) + 1

                counters = resource.run_all(requests, count, journal=journal, log=lambda _: None)
            except DifyFatalError as error:
                fatal = str(error)
        journal.close()
    return outcomes, counters, usage, fatal


def failing_app(count: int) -> bool:
    """Every run ends 200 + status failed (the sandbox is down): the day must stop after few paid runs."""
    config = {"apps": [{"api_key": KEY}], "latency_ms": 150, "faults": [{"kind": "failed_run_sandbox"}]}
    results = []
    for mode in ("blocking", "streaming"):
        with emulator_process(EMULATOR, config) as url:
            outcomes, _, usage, fatal = run(url, records(count), response_mode=mode)
            paid = stats(url)["paid_runs"]
        passed = fatal is not None and paid <= 50
        report(f"100%-failing app, {mode}", {"records": count, "paid_runs": paid, "seconds": usage.wall_seconds,
                                              "stopped": fatal is not None}, paid / 50, 1.0, passed)
        results.append(passed)
    return all(results)


def rare_5xx(count: int) -> bool:
    """2% of answers 500/502/503/504 (no Retry-After): goodput vs min(C/L) with the default settings."""
    latency, concurrency = 0.2, 16
    kinds = ["http_500", "http_502_html", "http_503", "http_504_html"]
    config = {"apps": [{"api_key": KEY}], "latency_ms": latency * 1000, "seed": 1, "server_worker_connections": None,
              "faults": [{"kind": k, "probability": 0.005} for k in kinds]}
    with emulator_process(EMULATOR, config) as url:
        outcomes, counters, usage, _ = run(url, records(count))
        server = stats(url)
    bound = concurrency / latency
    ratio = outcomes.get("ok", 0) / usage.wall_seconds / bound
    passed = ratio >= 0.9 and outcomes.get("ok", 0) == count
    report("2% 5xx, C=16, L=0.2 s", {"records": count, "seconds": usage.wall_seconds, "retries": counters["retries"],
                                     "paid/distinct": server["paid_runs"] / server["distinct_inputs"]},
           ratio, 0.9, passed)
    return passed


def connection_cap(count: int) -> bool:
    """A server that serves 10 connections (Dify's gevent default): the defaults vs the best fixed concurrency."""
    latency = 0.15
    config = {"apps": [{"api_key": KEY}], "latency_ms": latency * 1000, "server_worker_connections": 10,
              "server_keep_alive_seconds": 2.0, "ping_interval": 0.05, "seed": 1}
    results = []
    for mode in ("blocking", "streaming"):
        goodputs = {}
        for label, client in [("C=8", {"max_concurrency": 8}), ("C=10", {"max_concurrency": 10}),
                              ("default (C=16)", {}), ("C=32", {"max_concurrency": 32})]:
            with emulator_process(EMULATOR, config) as url:
                outcomes, counters, usage, _ = run(url, records(count), response_mode=mode, **client)
                server = stats(url)
            goodputs[label] = outcomes.get("ok", 0) / usage.wall_seconds
            duplicates = server["paid_runs"] - server["distinct_inputs"]
            timeouts = outcomes.get("timeout", 0)
            print(f"  {mode} {label}: goodput {goodputs[label]:.1f}/s, recovered {counters['recovered_runs']}, "
                  f"failed {count - outcomes.get('ok', 0)}, duplicates {duplicates}, "
                  f"max accept queue {server.get('max_accept_queue')}", flush=True)
            if label.startswith("default"):
                default = (goodputs[label], duplicates, timeouts, outcomes.get("ok", 0))
        best = max(goodputs.values())
        ratio = default[0] / best
        passed = ratio >= 0.9 and default[1] == 0 and default[2] == 0 and default[3] == count
        report(f"server capped at 10 connections, {mode}", {"records": count, "default/s": default[0],
               "best_fixed/s": best, "duplicates": default[1], "timeouts": default[2]}, ratio, 0.9, passed)
        results.append(passed)
    return all(results)


def fault_mix(count: int) -> bool:
    """Paid runs ÷ distinct inputs over a mix of faults that leave the outcome unknown or refuse the request."""
    mix = [("http_429", 0.01, 1.0), ("http_429", 0.01, None), ("http_503", 0.01, None), ("http_500", 0.01, None),
           ("malformed_json", 0.04, None), ("drop", 0.01, None), ("drop_mid_stream", 0.01, None),
           ("failed_run", 0.01, None)]
    config = {"apps": [{"api_key": KEY}], "latency_ms": 100, "ping_interval": 0.05, "server_worker_connections": 10,
              "seed": 2, "faults": [{"kind": k, "probability": p, "retry_after": r} for k, p, r in mix]}
    results = []
    for mode in ("blocking", "streaming"):
        with emulator_process(EMULATOR, config) as url:
            outcomes, counters, usage, _ = run(url, records(count), response_mode=mode)
            server = stats(url)
        ratio = server["paid_runs"] / server["distinct_inputs"]
        failed_runs = outcomes.get("run_failed", 0)  # paid, failed inside Dify, kept as the record's outcome
        passed = ratio == 1.0 and outcomes.get("ok", 0) + failed_runs == count
        report(f"fault mix (429 ± Retry-After, 503, 500, 4% cut bodies, drops, 1% failed runs), {mode}",
               {"records": count, "seconds": usage.wall_seconds, "recovered": counters["recovered_runs"],
                "lookups": counters["lookups"], "failed_runs": failed_runs}, ratio, 1.0, passed)
        results.append(passed)
    return all(results)


SCENARIOS = {"failing": failing_app, "5xx": rare_5xx, "cap": connection_cap, "faults": fault_mix}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--only", choices=sorted(SCENARIOS))
    args = parser.parse_args()
    chosen = [SCENARIOS[args.only]] if args.only else list(SCENARIOS.values())
    return 0 if all([scenario(args.records) for scenario in chosen]) else 1


if __name__ == "__main__":
    sys.exit(main())
