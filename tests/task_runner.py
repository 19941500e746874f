"""Run one of the DAG's tasks for a given run, in this process, as a worker would.

    python tests/task_runner.py plan RUN_ID '{"repositories": [...], ...}'
    python tests/task_runner.py fetch RUN_ID SLOT TRY_NUMBER
    python tests/task_runner.py commit RUN_ID

It calls the same functions and operator the DAG wires, with a minimal task-instance
context, so fault tests can kill or restart a single task process.

With TASK_RUNNER_EXIT_AFTER_STEPS=N, a fetch's first try (TRY_NUMBER 1) ends the process with
exit code 137, like a killed worker, right after its N-th step reached the staging: the
fault is injected here, around the operator's staging write, not inside the product.
"""

from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace

DAG_ID = "github_repo_users"
EXIT_AFTER_ENV = "TASK_RUNNER_EXIT_AFTER_STEPS"


def exit_after_steps(n: int) -> None:
    """Make the fetch operator's staging sink end the process after its n-th stored step."""
    from github_collector import operators

    write = operators._StagingSink.write
    stored = 0

    def write_then_maybe_die(self, step) -> None:
        nonlocal stored
        write(self, step)
        stored += 1
        if stored >= n:
            os._exit(137)

    operators._StagingSink.write = write_then_maybe_die


def main(argv: list[str]) -> int:
    from github_collector.run_tasks import commit_run, plan_run

    what, run_id = argv[0], argv[1]
    if what == "plan":
        params = {"relations": ["contributors", "forkers", "stargazers", "watchers"], "batch_size": 5}
        params.update(json.loads(argv[2]))
        print(json.dumps(plan_run(params, DAG_ID, run_id)))
    elif what == "fetch":
        from github_collector.operators import FetchBatchOperator

        slot, try_number = int(argv[2]), int(argv[3])
        if os.environ.get(EXIT_AFTER_ENV) and try_number <= 1:
            exit_after_steps(int(os.environ[EXIT_AFTER_ENV]))
        ti = SimpleNamespace(dag_id=DAG_ID, run_id=run_id, map_index=slot, try_number=try_number)
        op = FetchBatchOperator(task_id="fetch", slot=slot)
        from airflow.providers.common.compat.sdk import AirflowSkipException

        try:
            print(json.dumps(op.execute({"ti": ti})))
        except AirflowSkipException as exc:  # a slot with no batch: Airflow records it skipped
            print(json.dumps({"skipped": str(exc)}))
    elif what == "commit":
        print(json.dumps(commit_run(DAG_ID, run_id), default=str))
    else:
        raise SystemExit(f"unknown task {what!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
