"""End to end through Airflow: `airflow dags test github_repo_users` against the emulator,
the local Redis and a fresh Postgres database.

- Wall time is split with the timestamps of the dags test log: CLI start-up (imports, DAG
  parse, run creation), then per task the Airflow set-up and tear-down around it and the
  task's own execute() (from the end of its pre-execute group to "Post Execute").
- dags test runs every task in one process, so its RSS is sampled (process tree, 0.1 s) and
  each sample is attributed to the task running then. The replay then runs the same task
  functions one per process, as an executor's task processes do, for per-task peak RSS
  (VmHWM) and Redis memory at each stage, on a fresh key prefix and database.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import (
    ALL_RELATIONS,
    ROOT,
    BenchRedis,
    Emulator,
    Sampler,
    airflow_env,
    bench_redis,
    mb,
    pg_database,
    run_child,
    say,
    units_delta,
)

TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z)")
START = re.compile(r"\[DAG TEST\] starting task_id=(\S+) map_index=(-?\d+)")
END = re.compile(r"\[DAG TEST\] end task task_id=(\S+) map_index=(-?\d+)")
EXEC_START = "::endgroup::"  # the first one after a task starts closes Airflow's pre-execute group
EXEC_END = "::group::Post Execute"
TASK_TYPES = ("plan", "collect.quota_gate", "collect.fetch", "commit")
PLANNED = re.compile(r"(\d+) repositories in (\d+) batches of up to (\d+)")
CLAIMED = re.compile(r"slot (\d+), batch (\d+): \d+ repositories")
GATE_SKIPPED = re.compile(r"slot (\d+): every batch is taken by other slots")


def _ts(line: str) -> float | None:
    m = TS.match(line)
    return dt.datetime.fromisoformat(m.group(1)).timestamp() if m else None


def parse_tasks(lines: list[str]) -> list[dict]:
    tasks: list[dict] = []
    cur: dict | None = None
    for line in lines:
        t = _ts(line)
        if t is None:
            continue
        if m := START.search(line):
            cur = {
                "task": m.group(1),
                "map_index": int(m.group(2)),
                "start": t,
                "exec_start": None,
                "exec_end": None,
            }
            tasks.append(cur)
        elif cur is not None and EXEC_START in line and cur["exec_start"] is None:
            cur["exec_start"] = t
        elif cur is not None and EXEC_END in line:
            cur["exec_end"] = t
        elif (m := END.search(line)) and cur is not None:
            cur["end"] = t
            cur = None
    return tasks


def row_counts(dsn: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608 - fixed names
            for t in ("github_repository", "github_user", "github_repo_user")
        }


def dags_test(emu: Emulator, home: Path, conf_file: Path, r: BenchRedis, db: str, dsn: str) -> dict:
    env = airflow_env(home, github_url=emu.url, pg_db=db, prefix=r.prefix)
    units0 = emu.units()
    redis0 = r.used_memory()
    lines: list[str] = []
    log_path = home / "dags_test.log"
    t_start = time.time()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "child.py"),
            "airflow",
            str(conf_file),
            "--",
            "dags",
            "test",
            "github_repo_users",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def pump() -> None:
        assert proc.stdout is not None
        with log_path.open("w") as log:
            for line in proc.stdout:
                lines.append(line)
                log.write(line)

    reader = threading.Thread(target=pump, daemon=True)
    with Sampler(proc.pid, redis=r) as sampler:
        reader.start()
        rc = proc.wait()
        reader.join()
    t_end = time.time()
    if rc != 0:
        raise RuntimeError(f"airflow dags test failed ({rc}); log: {log_path}\n{''.join(lines[-30:])}")
    wall = t_end - t_start
    tasks = parse_tasks(lines)
    by_type: dict[str, dict] = {}
    for task in tasks:
        agg = by_type.setdefault(task["task"], {"n": 0, "task_s": 0.0, "execute_s": 0.0, "peak_rss": 0})
        agg["n"] += 1
        agg["task_s"] += task["end"] - task["start"]
        if task["exec_start"] and task["exec_end"]:
            agg["execute_s"] += task["exec_end"] - task["exec_start"]
        agg["peak_rss"] = max(agg["peak_rss"], sampler.peak_rss(task["start"], task["end"]))
    commit = next((t for t in tasks if t["task"] == "commit"), None)
    fetches = [t for t in tasks if t["task"] == "collect.fetch"]
    ours = sum(a["execute_s"] for a in by_type.values())
    in_tasks = sum(a["task_s"] for a in by_type.values())
    first_start = tasks[0]["start"] if tasks else t_end
    out = {
        "wall_s": round(wall, 1),
        "cli_startup_s": round(first_start - t_start, 1),
        "our_execute_s": round(ours, 1),
        "airflow_overhead_s": round(wall - ours, 1),
        "airflow_share": round((wall - ours) / wall, 3),
        "task_setup_teardown_s": round(in_tasks - ours, 1),
        "between_tasks_s": round(wall - in_tasks - (first_start - t_start), 1),
        "tasks": {
            k: {
                "n": v["n"],
                "task_s": round(v["task_s"], 1),
                "execute_s": round(v["execute_s"], 1),
                "airflow_s": round(v["task_s"] - v["execute_s"], 1),
                "per_task_airflow_s": round((v["task_s"] - v["execute_s"]) / v["n"], 3),
                "peak_rss_mb": mb(v["peak_rss"]),
            }
            for k, v in by_type.items()
        },
        "peak_rss_mb": mb(sampler.peak_rss()),
        "units": units_delta(emu.units(), units0),
        "redis_used_before_mb": mb(redis0),
        "redis_used_peak_mb": mb(sampler.peak_redis()),
        "redis_used_before_commit_mb": mb(
            max((s.redis or 0 for s in sampler.samples if commit and s.t <= commit["start"]), default=0)
        ),
        "redis_used_after_mb": mb(r.used_memory()),
        "slots": len(fetches),
        "batches": next((int(m.group(2)) for line in lines if (m := PLANNED.search(line))), None),
        "slots_with_batches": len({m.group(1) for line in lines if (m := CLAIMED.search(line))}),
        "gates_skipped": len({m.group(1) for line in lines if (m := GATE_SKIPPED.search(line))}),
        "rows": row_counts(dsn),
    }
    return out


def replay(emu: Emulator, home: Path, conf_file: Path, slots: int) -> dict:
    """The same tasks, one process each, on a fresh prefix and database: per-task peak RSS.

    As an executor runs them: plan, then every slot's quota_gate and fetch, the slots at once
    (the DAG allows 16 tasks at a time), then commit. Redis is sampled throughout.
    """
    with bench_redis("replay") as r, pg_database("replay") as (db, _dsn):
        env = airflow_env(home, github_url=emu.url, pg_db=db, prefix=r.prefix)
        run_id = f"bench_replay_{uuid.uuid4().hex[:8]}"
        used0, own0 = r.used_memory(), r.own_memory()
        plan = run_child(["plan", run_id, str(conf_file)], env=env)

        def chain(slot: int) -> tuple[dict, dict | None]:
            gate = run_child(["gate", run_id, str(slot)], env=env)
            return gate, None if gate["skipped"] else run_child(["fetch", run_id, str(slot)], env=env)

        t0 = time.perf_counter()
        with Sampler(os.getpid(), redis=r) as sampler, ThreadPoolExecutor(slots) as pool:
            chains = list(pool.map(chain, range(slots)))
        fetch_wall = time.perf_counter() - t0
        gates = [g for g, _ in chains]
        fetches = [f for _, f in chains if f is not None]
        working = [f for f in fetches if f["summary"]["batches"]]
        used1, own1 = r.used_memory(), r.own_memory()
        commit = run_child(["commit", run_id], env=env)
        used2, own2 = r.used_memory(), r.own_memory()
    return {
        "plan": {"seconds": round(plan["seconds"], 2), "peak_rss_mb": mb(plan["peak_rss"])},
        "gate": {
            "n": len(gates),
            "skipped": sum(g["skipped"] for g in gates),
            "seconds": round(max(g["seconds"] for g in gates), 2),
            "peak_rss_mb": mb(max(g["peak_rss"] for g in gates)),
        },
        "fetch": {
            "n": len(fetches),
            "with_batches": len(working),
            "batches": sum(len(f["summary"]["batches"]) for f in fetches),
            "wall_s": round(fetch_wall, 1),
            "seconds_total": round(sum(f["seconds"] for f in fetches), 1),
            "seconds": round(max(f["seconds"] for f in fetches), 1),
            "peak_rss_mb": mb(max(f["peak_rss"] for f in fetches)),
            "rss_before_mb": mb(max(f["rss_before"] for f in fetches)),
        },
        "commit": {
            "seconds": round(commit["seconds"], 1),
            "peak_rss_mb": mb(commit["peak_rss"]),
            "rss_before_mb": mb(commit["rss_before"]),
            "records": sum(commit["counts"]["committed"].values()),
        },
        "redis_own_mb": {"before_fetch": mb(own0), "before_commit": mb(own1), "after_commit": mb(own2)},
        "redis_used_mb": {
            "before_fetch": mb(used0),
            "peak_fetch": mb(sampler.peak_redis()),
            "before_commit": mb(used1),
            "after_commit": mb(used2),
        },
    }


def run(spec: dict, label: str, do_replay: bool = True) -> dict:
    from github_collector import settings

    out: dict = {"label": label, "dataset": spec, "slots": settings.fetch_slots()}
    with tempfile.TemporaryDirectory(prefix="bench-airflow-") as tmp:
        home = Path(tmp)
        with Emulator(spec, truth=True) as emu:
            out["repos"] = len(emu.repos)
            out["truth"] = emu.truth
            conf_file = home / "conf.json"
            conf_file.write_text(
                json.dumps({"repositories": emu.repos, "relations": ALL_RELATIONS, "batch_size": 50})
            )
            t0 = time.perf_counter()
            env = airflow_env(home, github_url=emu.url, pg_db="postgres", prefix="bench:unused:")
            subprocess.run(
                [sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True
            )
            out["airflow_db_migrate_s"] = round(time.perf_counter() - t0, 1)
            say(f"e2e[{label}]: airflow dags test over {len(emu.repos)} repositories")
            with bench_redis("e2e") as r, pg_database("e2e") as (db, dsn):
                out["dags_test"] = dags_test(emu, home, conf_file, r, db, dsn)
            rows = out["dags_test"]["rows"]
            out["complete"] = (
                rows["github_user"] == emu.truth["users"] and rows["github_repo_user"] == emu.truth["pairs"]
            )
            if do_replay:
                say(f"e2e[{label}]: replaying the tasks one process each")
                out["replay"] = replay(emu, home, conf_file, out["slots"])
    return out
