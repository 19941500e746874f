"""Run one piece of the product in its own process and report its time and peak memory.

    python bench/child.py plan RUN_ID CONF_FILE
    python bench/child.py gate RUN_ID SLOT       (the slot's quota_gate sensor)
    python bench/child.py fetch RUN_ID SLOT
    python bench/child.py commit RUN_ID [--profile FILE]
    python bench/child.py airflow CONF_FILE -- ARGS...   (the airflow CLI with -c read from a file)

plan/fetch/commit call what the DAG's tasks call, as tests/task_runner.py does, with the
connections from AIRFLOW_CONN_* variables. A task process of a real executor runs one task,
so this process's peak RSS (VmHWM) is that task's peak. The last stdout line is a JSON report.
"""

from __future__ import annotations

import contextlib
import importlib
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


def _profiled(path: str, fn, *args: object) -> object:
    """Run ``fn`` under cProfile, each thread it starts under a profiler of its own (the commit
    reads Redis and writes Postgres in threads); the stats of all threads are merged."""
    import cProfile
    import pstats
    import threading

    profilers = [cProfile.Profile()]
    thread_run = threading.Thread.run

    def run(self: threading.Thread) -> None:
        prof = cProfile.Profile()
        profilers.append(prof)
        prof.runcall(thread_run, self)

    threading.Thread.run = run  # type: ignore[method-assign]
    try:
        out = profilers[0].runcall(fn, *args)
    finally:
        threading.Thread.run = thread_run  # type: ignore[method-assign]
    stats = pstats.Stats(profilers[0])
    for prof in profilers[1:]:
        stats.add(prof)
    stats.dump_stats(path)
    return out


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

    # The modules a task imports lazily are imported before its clock starts, so the figure is
    # the task's work (the RSS includes them all the same).
    import airflow.providers.standard.triggers.temporal  # noqa: F401
    from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: F401
    from airflow.providers.redis.hooks.redis import RedisHook  # noqa: F401

    # A task process is forked from Airflow 3's supervisor, so the first connection lookup
    # finds this module loaded; here it would cost that lookup ~20 ms of import.
    with contextlib.suppress(ImportError):  # Airflow 2 has no such module
        importlib.import_module("airflow.sdk.execution_time.supervisor")

    from github_collector import hook, loader  # noqa: F401
    from github_collector.run_tasks import commit_run, plan_run

    run_id = argv[1]
    if what == "plan":
        params = json.loads(Path(argv[2]).read_text())
        rss = _rss()
        t0 = time.perf_counter()
        summary = plan_run(params, DAG_ID, run_id)
        _report(time.perf_counter() - t0, rss, batches=summary["batches"])
    elif what == "gate":
        from airflow.providers.common.compat.sdk import AirflowSkipException

        from github_collector.sensors import RateLimitSensor

        slot = int(argv[2])
        ti = SimpleNamespace(dag_id=DAG_ID, run_id=run_id, map_index=slot, try_number=1)
        op = RateLimitSensor(task_id="quota_gate", slot=slot)
        rss = _rss()
        t0 = time.perf_counter()
        try:
            op.execute({"ti": ti})  # the bench's limits are huge: it passes or skips, never defers
            skipped = False
        except AirflowSkipException:
            skipped = True
        _report(time.perf_counter() - t0, rss, skipped=skipped)
    elif what == "fetch":
        from airflow.providers.common.compat.sdk import AirflowSkipException

        from github_collector.operators import FetchBatchOperator

        slot = int(argv[2])
        ti = SimpleNamespace(dag_id=DAG_ID, run_id=run_id, map_index=slot, try_number=1)
        op = FetchBatchOperator(task_id="fetch", slot=slot)
        rss = _rss()
        t0 = time.perf_counter()
        try:
            summary = op.execute({"ti": ti})
        except AirflowSkipException:  # every batch was claimed by other slots first: idle
            summary = {"slot": slot, "batches": [], "skipped": True}
        _report(time.perf_counter() - t0, rss, summary=summary)
    elif what == "commit":
        profile = argv[argv.index("--profile") + 1] if "--profile" in argv else None
        rss = _rss()
        t0 = time.perf_counter()
        counts = _profiled(profile, commit_run, DAG_ID, run_id) if profile else commit_run(DAG_ID, run_id)
        _report(time.perf_counter() - t0, rss, counts=counts)
    else:
        raise SystemExit(f"unknown command {what!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
