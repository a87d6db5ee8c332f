"""A run of the daily job for each line read on stdin, in this one process: a test starts the same day again
and again, with the imports paid once. A line is JSON, {"assets": [...] or null (all), "env": {...}}; the
answer is one line, {"success": bool, "failures": ["step: message", ...]}.

`python -m dify_pipeline_tests.integration.run_on_request 2026-11-20`"""

from __future__ import annotations

import json
import os
import sys

import dagster as dg

from dify_pipeline.definitions import build_definitions


def main(day: str) -> None:
    with dg.DagsterInstance.get() as instance:
        for line in sys.stdin:
            request = json.loads(line)
            os.environ.update(request["env"])
            job = build_definitions().resolve_job_def("daily_enrichment")  # the environment as it is now
            selection = [dg.AssetKey(name) for name in request["assets"]] if request["assets"] else None
            result = job.execute_in_process(partition_key=day, instance=instance, raise_on_error=False,
                                            asset_selection=selection)
            failures = [f"{event.step_key}: {_failure(event.step_failure_data)}"
                        for event in result.all_events if event.is_step_failure]
            print(json.dumps({"success": result.success, "failures": failures}), flush=True)


def _failure(data) -> str:
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    return data.error.message if data.error else "?"


if __name__ == "__main__":
    main(sys.argv[1])
