"""A day is streamed, not held: the client takes its requests a few ahead of the calls in flight, and a pinned day
sends one at a time from the same stream until pinned."""

from __future__ import annotations

from dify_pipeline.resources.dify import DifyRequest
from dify_pipeline_tests.integration.test_dify_resource import client, configure


def counted_requests(count: int, taken: list[int], answered: list[int], ahead: list[int]):
    for i in range(count):
        taken[0] += 1
        ahead[0] = max(ahead[0], taken[0] - answered[0])
        yield DifyRequest(f"ticket-{i}", {"subject": f"ticket {i}", "body": f"body {i}"})


def test_run_all_takes_a_generator_lazily_a_bounded_number_ahead_of_the_answers(dify_emulator):
    configure(dify_emulator, latency_ms=2)
    taken, answered, ahead = [0], [0], [0]
    resource = client(dify_emulator, max_concurrency=2)
    resource.run_all(counted_requests(300, taken, answered, ahead),
                     lambda result: answered.__setitem__(0, answered[0] + 1))
    assert taken[0] == answered[0] == 300
    assert ahead[0] <= 2 * 4 + 1  # the workers' requests in flight, never the day


def test_a_pinned_day_sends_one_at_a_time_from_the_stream_then_the_rest_at_that_version(dify_emulator):
    configure(dify_emulator, latency_ms=2)
    taken, answered, ahead = [0], [0], [0]
    pinned: list[str] = []
    results = []
    resource = client(dify_emulator, max_concurrency=2)
    resource.run_all(counted_requests(50, taken, answered, ahead),
                     lambda result: (results.append(result), answered.__setitem__(0, answered[0] + 1)),
                     pin=lambda workflow_id: pinned.append(workflow_id) or workflow_id)
    assert len(results) == 50 == len({r.record_key for r in results}) and len(pinned) == 1
    assert {r.workflow_id for r in results} == set(pinned)
    assert ahead[0] <= 2 * 4 + 1


def test_a_shard_whose_inputs_are_all_answered_is_written_while_the_rest_of_the_day_is_sent(
    pipeline_env, source_tickets, dagster_instance, dify_emulator, monkeypatch
):
    import time

    from dify_pipeline.contract import CleaningContract, tickets_contract
    from dify_pipeline.resources.storage import ObjectStorage
    from dify_pipeline_dev.emulators.dify import DifyApp, DifyEmulatorConfig
    from dify_pipeline_tests.integration.pipeline import DIFY_KEY, materialization_metadata, run_day

    dify_emulator.configure(DifyEmulatorConfig(apps=[DifyApp(api_key=DIFY_KEY)], latency_ms=20))
    written: list[float] = []  # when each enriched shard was written (the emulator's clock: time.time())
    write_parquet = ObjectStorage.write_parquet

    def spy(self, path, *args, **kwargs):
        if "/enriched_tickets/" in str(path):
            written.append(time.time())
        return write_parquet(self, path, *args, **kwargs)

    monkeypatch.setattr(ObjectStorage, "write_parquet", spy)
    result = run_day(dagster_instance, contract=tickets_contract(cleaning=CleaningContract(max_shard_rows=20)))
    runs = [r for r in dify_emulator.requests() if r["path"].endswith("/run")]
    assert result.success and len(runs) == materialization_metadata(result, "enriched_tickets")["requests_sent"] > 100
    assert len(written) > 10
    assert min(written) < max(r["answered_at"] for r in runs)  # not after the day's last answer: beside the sending
