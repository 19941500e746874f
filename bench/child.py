"""Run one piece of the product in its own process and report its time and peak memory.

    python bench/child.py plan RUN_ID CONF_FILE
    python bench/child.py fetch RUN_ID MAP_INDEX
    python bench/child.py commit RUN_ID [--profile FILE]
    python bench/child.py airflow CONF_FILE -- ARGS...   (the airflow CLI with -c read from a file)

plan/fetch/commit call what the DAG's tasks call, as tests/task_runner.py does, with the
connections from AIRFLOW_CONN_* variables. A task process of a real executor runs one task,
so this process's peak RSS (VmHWM) is that task's peak. The last stdout line is a JSON report.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

DAG_ID = "github_repo_users"


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _peak_rss() -> int:
    """This process's peak RSS. Not ru_maxrss: Linux carries the parent's peak over a
    fork + exec into it, so a child of a big parent would report the parent's figure."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _report(seconds: float, rss_before: int, **extra: object) -> None:
    peak = _peak_rss()
    print(json.dumps({"seconds": seconds, "rss_before": rss_before, "peak_rss": peak, **extra}, default=str))


def main(argv: list[str]) -> int:
    what = argv[0]
    if what == "airflow":
        # The CLI takes the run's conf only as an argument, and one argument may not exceed
        # 128 KiB on Linux; 10,000 repository names do. Same CLI, argv built in-process.
        conf = Path(argv[1]).read_text()
        rest = argv[argv.index("--") + 1 :]
        sys.argv = ["airflow", *rest, "-c", conf]
        from airflow.__main__ import main as airflow_main

        return airflow_main() or 0

    from github_collector.run_tasks import commit_run, plan_run

    run_id = argv[1]
    if what == "plan":
        params = json.loads(Path(argv[2]).read_text())
        rss = _rss()
        t0 = time.perf_counter()
        batches = plan_run(params, DAG_ID, run_id)
        _report(time.perf_counter() - t0, rss, batches=len(batches))
    elif what == "fetch":
        from github_collector.operators import FetchBatchOperator

        ti = SimpleNamespace(dag_id=DAG_ID, run_id=run_id, map_index=int(argv[2]), try_number=1)
        op = FetchBatchOperator(task_id="fetch", batch=[])
        rss = _rss()
        t0 = time.perf_counter()
        summary = op.execute({"ti": ti})
        _report(time.perf_counter() - t0, rss, summary=summary)
    elif what == "commit":
        profile = argv[argv.index("--profile") + 1] if "--profile" in argv else None
        from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: F401 - import before measuring

        rss = _rss()
        t0 = time.perf_counter()
        if profile:
            import cProfile

            prof = cProfile.Profile()
            counts = prof.runcall(commit_run, DAG_ID, run_id)
            prof.dump_stats(profile)
        else:
            counts = commit_run(DAG_ID, run_id)
        _report(time.perf_counter() - t0, rss, counts=counts)
    else:
        raise SystemExit(f"unknown command {what!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
