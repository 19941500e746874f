"""Run one of the DAG's tasks for a given run, in this process, as a worker would.

    python tests/task_runner.py plan RUN_ID '{"repositories": [...], ...}'
    python tests/task_runner.py fetch RUN_ID SLOT TRY_NUMBER
    python tests/task_runner.py commit RUN_ID

It calls the same functions and operator the DAG wires, with a minimal task-instance
context, so fault tests can kill or restart a single task process.
"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

DAG_ID = "github_repo_users"


def main(argv: list[str]) -> int:
    from github_collector.run_tasks import commit_run, plan_run

    what, run_id = argv[0], argv[1]
    if what == "plan":
        params = {"relations": ["contributors", "forkers", "stargazers", "watchers"], "batch_size": 5}
        params.update(json.loads(argv[2]))
        print(json.dumps(plan_run(params, DAG_ID, run_id)))
    elif what == "fetch":
        from github_collector.operators import FetchBatchOperator

        slot = int(argv[2])
        ti = SimpleNamespace(dag_id=DAG_ID, run_id=run_id, map_index=slot, try_number=int(argv[3]))
        op = FetchBatchOperator(task_id="fetch", slot=slot)
        print(json.dumps(op.execute({"ti": ti})))
    elif what == "commit":
        print(json.dumps(commit_run(DAG_ID, run_id), default=str))
    else:
        raise SystemExit(f"unknown task {what!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
