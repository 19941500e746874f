"""Quota-bound runs: work that outgrows several quota windows, through the DAG's real tasks.

Each run has a scaled quota (windows of WINDOW_S seconds) sized so that its workload needs
about WINDOWS windows of every resource it uses: a first run with unlimited quota measures
the units the workload costs, then each configuration's limits are set from that. The run
itself goes through the plan, sensor, fetch and commit tasks in this process (tests'
InProcessRun, which plays the triggerer for deferrals), at the product's default settings
but the reserve. Some configurations run again through Airflow itself (AIRFLOW_RUNS):
`airflow dags test` (one process, one task at a time, triggers run inline) and a Celery
cluster of two `airflow celery worker`s with scheduler, dag-processor, api-server, triggerer,
a Redis broker and a Postgres metadata DB (tests/celery_cluster.py). Their wall time is the
DAG run's, read from the metadata DB; the start-up before it is reported apart.

Figures come from the emulator's request log and stats: the emulator starts every account's
first window when it starts (read from its stats before any request), and each later one at
the account's first request after the previous reset, ending it WINDOW_S later (rounded up to
a second), so the windows are rebuilt from the log as the emulator kept them.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import ROOT, bench_redis, pg_database, say

sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "emulator"))

WINDOW_S = 15
WINDOWS = 4  # the workload needs about this many windows of each resource
RESERVE = 5
SLOTS = 3
SPEC = {"seed": 5, "n_repos": 40, "n_users": 30_000, "max_per_repo": 4_000, "max_contributors": 600}
RESOURCES = ("core", "graphql")
# (label, accounts of the tokens, GraphQL CPU budget in s per minute: None = off)
CONFIGS = [
    ("1 token", ["a"], None),
    ("3 tokens, 3 accounts", ["a", "b", "c"], None),
    ("2 tokens, 1 account", ["a", "a"], None),
    ("1 token, GraphQL CPU limit on", ["a"], 60.0),
]
GOALS = {"spent_share": 0.95, "reset_gap_s": 2.0, "windows_over_floor": 1, "secondary_hits": 0}

IN_PROCESS, DAGS_TEST, CELERY = "in process", "airflow dags test", "Celery, 2 workers"
CELERY_DEFERRED = "Celery, every wait deferred"  # max_inline_wait 0: the triggerer serves each wait
# The same workload through Airflow itself as well: (way, label of a CONFIGS entry)
AIRFLOW_RUNS = [(way, label) for way in (DAGS_TEST, CELERY) for label, _, _ in CONFIGS] + [
    (CELERY_DEFERRED, "1 token"),
    (CELERY_DEFERRED, "3 tokens, 3 accounts"),
]
RELATIONS = ["contributors", "forkers", "stargazers", "watchers"]  # InProcessRun's default
# The run's conf: what InProcessRun's plan gets (the DAG's own defaults differ)
CONF = {"relations": RELATIONS, "batch_size": 3, "full_refresh": False}
CELERY_WORKERS = ("worker1", "worker2")
CELERY_CONCURRENCY = 2
STARTUP_TIMEOUT_S, RUN_TIMEOUT_S = 420, 900  # generous: the machine is small and shared


def _emulator_config(tokens, cpu: float | None):
    from github_emulator import EmulatorConfig

    return EmulatorConfig(
        tokens=tokens,
        window_seconds=WINDOW_S,
        graphql_cpu_seconds_per_minute=cpu,
        log_limit=1_000_000,
    )


def _first_reset(srv) -> dict:
    """Every account's first reset: its first windows start with the emulator, not at the
    first request (read before any request)."""
    return {a: {x: w[x]["reset"] for x in RESOURCES} for a, w in srv.stats()["accounts"].items()}


def _conn_env(url: str, tokens, db: str, prefix: str, **github_extra: object) -> dict[str, str]:
    from fault_harness import conn_env

    return conn_env(
        github_url=url,
        tokens=[t.token for t in tokens],
        pg_db=db,
        prefix=prefix,
        github_extra={"reserve": RESERVE, **github_extra},
    )


def _run_dag(dataset, tokens, cpu: float | None, tag: str) -> tuple[list[dict], dict, float, dict]:
    from fault_harness import InProcessRun

    from github_emulator import EmulatorServer

    cfg = _emulator_config(tokens, cpu)
    with bench_redis(tag) as r, pg_database(tag) as (db, _dsn), EmulatorServer(dataset, cfg) as srv:
        first_reset = _first_reset(srv)
        env = _conn_env(srv.url, tokens, db, r.prefix)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            t0 = time.time()
            out = InProcessRun(f"qb-{tag}-{uuid.uuid4().hex[:6]}", slots=SLOTS).run(
                {"repositories": dataset.repo_names(), "batch_size": CONF["batch_size"]}
            )
            wall = time.time() - t0
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        states = {
            "commit": out["commit"].state if "commit" in out else out["plan"].state,
            "slots": sorted(o.state for o in out.get("slots", {}).values()),
        }
        return srv.request_log(), {**srv.stats(), "first_reset": first_reset}, wall, states


def _epoch(v: object) -> float | None:
    """A metadata DB timestamp as seconds since the epoch: a datetime (Postgres) or the text
    SQLite keeps, naive ones being UTC as Airflow stores them."""
    if v is None:
        return None
    when = v if isinstance(v, dt.datetime) else dt.datetime.fromisoformat(str(v))
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def airflow_outcome(dag_run: dict, tis: list[dict], from_queued: bool) -> tuple[float, float, dict]:
    """(start, wall s, task states) of a DAG run from its metadata rows.

    The run starts when it was queued (a triggered run: the scheduler's and executor's delays
    are the run's) or, ``from_queued`` false, when its first task started (`airflow dags test`
    creates the run after parsing the DAG again, which is start-up; the run's own start when no
    task has one). It ends at the run's end_date, or its last task's. States as ``_run_dag``'s:
    the commit's (the plan's if there is none) and the fetch slots', sorted.
    """
    starts = [t for t in (_epoch(ti["start_date"]) for ti in tis) if t is not None]
    start = _epoch(dag_run.get("queued_at")) if from_queued else None
    if start is None:
        # Airflow 2.x's dags test records no task start: the run's, a DAG parse earlier
        start = min(starts) if starts else _epoch(dag_run.get("start_date"))
    end = _epoch(dag_run.get("end_date"))
    if end is None:
        end = max((t for t in (_epoch(ti["end_date"]) for ti in tis) if t is not None), default=None)
    if start is None or end is None:
        raise RuntimeError(f"the DAG run has no start or end: {dag_run}")
    by_task = {ti["task_id"]: ti["state"] for ti in tis if ti["map_index"] == -1}
    states = {
        "commit": by_task.get("commit") or by_task.get("plan") or dag_run.get("state"),
        "slots": sorted(str(ti["state"]) for ti in tis if ti["task_id"] == "collect.fetch"),
    }
    return start, end - start, states


DAG_ID = "github_repo_users"
RUN_SQL = "SELECT run_id, state, queued_at, start_date, end_date FROM dag_run WHERE dag_id = {p}"
TI_SQL = (
    "SELECT task_id, map_index, state, start_date, end_date FROM task_instance"
    " WHERE dag_id = {p} AND run_id = {p}"
)


def _sqlite_run(env: dict) -> tuple[dict, list[dict]]:
    """The DAG run of a dags test and its task instances, from the home's SQLite metadata DB."""
    import contextlib
    import sqlite3

    url = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
        db.row_factory = sqlite3.Row
        runs = [dict(r) for r in db.execute(RUN_SQL.format(p="?"), (DAG_ID,))]
        if len(runs) != 1:
            raise RuntimeError(f"expected one run of {DAG_ID}, found {runs}")
        tis = [dict(r) for r in db.execute(TI_SQL.format(p="?"), (DAG_ID, runs[0]["run_id"]))]
    return runs[0], tis


def _pg_run(dsn: str, run_id: str) -> tuple[dict, list[dict]]:
    """A DAG run of the Celery cluster and its task instances, from its Postgres metadata DB."""
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        run = conn.execute(RUN_SQL.format(p="%s") + " AND run_id = %s", (DAG_ID, run_id)).fetchone()
        tis = conn.execute(TI_SQL.format(p="%s"), (DAG_ID, run_id)).fetchall()
    return run, tis


def _run_dags_test(dataset, tokens, cpu: float | None, tag: str) -> tuple[list[dict], dict, float, dict]:
    """The run through `airflow dags test`, with a SQLite metadata DB in a home of its own."""
    from e2e_harness import airflow_env, dags_test, free_port, migrate

    from github_emulator import EmulatorServer

    port = free_port()  # the emulator starts after `db migrate`, just before the run
    url = f"http://127.0.0.1:{port}"
    with (
        bench_redis(tag) as r,
        pg_database(tag) as (db, _dsn),
        tempfile.TemporaryDirectory(prefix="qb-dags-test-") as home,
    ):
        env = airflow_env(
            Path(home),
            github_url=url,
            tokens=[t.token for t in tokens],
            pg_db=db,
            prefix=r.prefix,
            extra={**_conn_env(url, tokens, db, r.prefix), "GITHUB_REPO_USERS_FETCH_SLOTS": str(SLOTS)},
        )
        t0 = time.time()
        migrate(env)
        with EmulatorServer(dataset, _emulator_config(tokens, cpu), port=port) as srv:
            first_reset = _first_reset(srv)
            t1 = time.time()
            proc = dags_test(env, {"repositories": dataset.repo_names(), **CONF}, timeout=RUN_TIMEOUT_S)
            if proc.returncode != 0:
                raise RuntimeError(f"airflow dags test failed ({proc.returncode}): {proc.stderr[-2000:]}")
            start, wall, states = airflow_outcome(*_sqlite_run(env), from_queued=False)
            # `db migrate`, then the CLI's imports, DAG parse and run creation before the first task
            startup = (t1 - t0) + (start - t1)
            stats = {**srv.stats(), "first_reset": first_reset, "startup_s": round(startup, 1)}
            return srv.request_log(), stats, wall, states


def _run_celery(
    dataset, tokens, cpu: float | None, tag: str, **github_extra: object
) -> tuple[list[dict], dict, float, dict]:
    """The run on a Celery cluster as tests/test_distributed_celery.py starts it (two workers of
    two processes each), at the product's default settings but the reserve (and github_extra)."""
    from celery_cluster import CeleryCluster
    from e2e_harness import free_port

    from github_emulator import EmulatorServer

    port = free_port()  # the emulator starts once the cluster is ready, just before the run
    url = f"http://127.0.0.1:{port}"
    with (
        bench_redis(tag) as r,
        pg_database(tag) as (db, _dsn),
        tempfile.TemporaryDirectory(prefix="qb-celery-") as workdir,
    ):
        # Every component parses the DAG with the same number of mapped slots.
        env = {
            **_conn_env(url, tokens, db, r.prefix, **github_extra),
            "GITHUB_REPO_USERS_FETCH_SLOTS": str(SLOTS),
        }
        t0 = time.time()
        with CeleryCluster(
            Path(workdir),
            env,
            workers=CELERY_WORKERS,
            concurrency=CELERY_CONCURRENCY,
            startup_timeout=STARTUP_TIMEOUT_S,
        ) as cluster:
            startup = time.time() - t0
            with EmulatorServer(dataset, _emulator_config(tokens, cpu), port=port) as srv:
                first_reset = _first_reset(srv)
                run_id = cluster.trigger({"repositories": dataset.repo_names(), **CONF})
                state = cluster.wait(run_id, RUN_TIMEOUT_S)
                if state != "success":
                    say(f"quota-bound: Celery run {state}: {cluster.summary(run_id)}")
                _start, wall, states = airflow_outcome(*_pg_run(cluster.meta_dsn, run_id), from_queued=True)
                states["deferrals"] = _deferrals(cluster.home / "logs", run_id)
                stats = {**srv.stats(), "first_reset": first_reset, "startup_s": round(startup, 1)}
                return srv.request_log(), stats, wall, states


def _deferrals(logs: Path, run_id: str) -> int:
    """Deferrals of the run's tasks, by their own logs: the fetch and the quota gate each log
    "deferring until" as they defer (the triggerer's logs beside them are left out)."""
    from celery_cluster import DAG_ID

    return sum(
        path.read_text(errors="replace").count("deferring until")
        for path in (logs / f"dag_id={DAG_ID}" / f"run_id={run_id}").rglob("*.log")
        if ".log.trigger." not in path.name
    )


RUNNERS = {
    IN_PROCESS: _run_dag,
    DAGS_TEST: _run_dags_test,
    CELERY: _run_celery,
    CELERY_DEFERRED: functools.partial(_run_celery, max_inline_wait=0),
}


def skip_reason(way: str, airflow_major: int) -> str | None:
    """Why a way of running cannot run on this Airflow, or None."""
    if way in (CELERY, CELERY_DEFERRED) and airflow_major < 3:
        return "the Celery cluster (api-server, task execution API, dag-processor) is Airflow 3's"
    return None


def _windows(log: list[dict], account: str, resource: str, first_reset: float | None = None) -> list[dict]:
    """The account's windows of ``resource`` as the emulator kept them, with the units charged
    (the first one from the emulator's start, ending at ``first_reset``, when known)."""
    wins: list[dict] = []
    reset = -math.inf
    if first_reset is not None:
        reset = first_reset
        wins.append({"start": first_reset - WINDOW_S, "reset": reset, "used": 0})
    for e in log:
        if e["account"] != account:
            continue
        if e["resource"] != resource and not e["path"].startswith("/rate_limit"):
            continue
        if e["t"] >= reset:
            reset = math.ceil(e["t"] + WINDOW_S)
            wins.append({"start": e["t"], "reset": reset, "used": 0})
        if e["resource"] == resource and e.get("cost"):
            wins[-1]["used"] += e["cost"]
    return wins


def analyse(log: list[dict], stats: dict, wall: float, limits: dict[str, int]) -> dict:
    log = sorted(log, key=lambda e: e["t"])
    accounts = sorted({e["account"] for e in log if e["account"]})
    usable = {r: limits[r] - RESERVE for r in RESOURCES}
    out: dict = {"wall_s": round(wall, 1), "secondary_hits": stats["secondary_limit_hits"]}
    units = {r: sum(e.get("cost") or 0 for e in log if e["resource"] == r) for r in RESOURCES}
    out["units"] = units
    floor = max(math.ceil(units[r] / (usable[r] * len(accounts))) for r in RESOURCES if units[r])
    out["floor_windows"] = floor
    out["wall_windows"] = round(wall / WINDOW_S, 2)
    gaps: list[float] = []  # reset + 1 s to the account's first request after it, of any resource
    same: list[float] = []  # ... to its first request of the resource that was spent
    for r in RESOURCES:
        out[f"{r}_closed_windows"] = 0
        out[f"{r}_spent_min"] = out[f"{r}_spent_mean"] = out[f"{r}_spent_of_usable_min"] = None
        if not units[r]:
            continue
        charged = [e for e in log if e["resource"] == r and e.get("cost")]
        last = charged[-1]["t"]
        shares = []  # units charged / (limit - reserve)
        spendable = []  # units charged / what the window could have spent: (limit - reserve),
        # or less when the run had less work of the resource left from the window's start on
        # (every account's, so it never understates a window's shortfall)
        for acct in accounts:
            sent = [e["t"] for e in log if e["account"] == acct and e["resource"] == r and e.get("cost")]
            sent_any = [e["t"] for e in log if e["account"] == acct and e.get("cost")]
            first = (stats.get("first_reset") or {}).get(acct, {}).get(r)
            for w in _windows(log, acct, r, first):
                if w["reset"] > last:  # still open when the resource's work ended
                    continue
                if w["start"] >= log[0]["t"]:  # not the one opened with the emulator, before the run
                    shares.append(w["used"] / usable[r])
                    left = sum(e["cost"] for e in charged if e["t"] >= w["start"])
                    spendable.append(w["used"] / min(usable[r], left))
                if w["used"] >= usable[r] - 2:  # spent to the reserve: the run waited for this reset
                    after = [t for t in sent if t >= w["reset"]]
                    if after:
                        same.append(after[0] - (w["reset"] + 1))
                    after = [t for t in sent_any if t >= w["reset"]]
                    if after:
                        gaps.append(after[0] - (w["reset"] + 1))
        out[f"{r}_closed_windows"] = len(shares)
        out[f"{r}_spent_min"] = round(min(spendable), 3) if spendable else None
        out[f"{r}_spent_mean"] = round(statistics.mean(spendable), 3) if spendable else None
        out[f"{r}_spent_of_usable_min"] = round(min(shares), 3) if shares else None
    out["reset_gaps"] = len(gaps)
    out["reset_gap_median_s"] = round(statistics.median(gaps), 2) if gaps else None
    out["reset_gap_max_s"] = round(max(gaps), 2) if gaps else None
    out["same_resource_gap_median_s"] = round(statistics.median(same), 2) if same else None
    out["same_resource_gap_max_s"] = round(max(same), 2) if same else None
    return out


def run(airflow_ways: bool = True) -> dict:
    """Every configuration in process, and through Airflow too unless ``airflow_ways`` is off
    (bench/run.py --quick: the Airflow ways take most of the section's ~15 min)."""
    from github_emulator import DatasetSpec, TokenConfig, build_dataset

    dataset = build_dataset(DatasetSpec(**SPEC))
    say(f"quota-bound: probing the workload's cost ({SPEC})")
    probe_tokens = [
        TokenConfig(
            name="probe",
            token="qb-probe-token-0",  # noqa: S106 - a dummy value only the emulator knows
            core_limit=10**9,
            graphql_limit=10**9,
            collaborator_repos=("*",),
        )
    ]
    log, _stats, probe_wall, _ = _run_dag(dataset, probe_tokens, None, "qbprobe")
    cost = {r: sum(e.get("cost") or 0 for e in log if e["resource"] == r) for r in RESOURCES}
    results: dict = {
        "window_s": WINDOW_S,
        "reserve": RESERVE,
        "slots": SLOTS,
        "spec": SPEC,
        "probe_units": cost,
        "probe_wall_s": round(probe_wall, 1),
        "runs": [],
    }
    from e2e_harness import airflow_major

    results["not_run"] = []
    planned = [(IN_PROCESS, c) for c in CONFIGS] + [
        (way, next(c for c in CONFIGS if c[0] == label)) for way, label in AIRFLOW_RUNS if airflow_ways
    ]
    for way, (label, accounts, cpu) in planned:
        reason = skip_reason(way, airflow_major())
        if reason:
            say(f"quota-bound: {label}, {way}: skipped: {reason}")
            results["not_run"].append({"label": label, "way": way, "reason": reason, "failed": False})
            continue
        n_accounts = len(set(accounts))
        limits = {r: math.ceil(cost[r] / (WINDOWS * n_accounts)) + RESERVE for r in RESOURCES}
        tokens = [
            TokenConfig(
                name=f"t{i}",
                token=f"qb-token-{i}-{uuid.uuid4().hex[:6]}",
                account=acct,
                core_limit=limits["core"],
                graphql_limit=limits["graphql"],
                collaborator_repos=("*",),
            )
            for i, acct in enumerate(accounts)
        ]
        say(f"quota-bound: {label}, {way}: limits {limits} per {WINDOW_S} s window")
        try:
            log, stats, wall, states = RUNNERS[way](dataset, tokens, cpu, "qb")
        except Exception as exc:  # one way failing must not lose the others' figures
            reason = f"{type(exc).__name__}: {str(exc)[-1500:]}"
            say(f"quota-bound: {label}, {way}: failed: {reason}")
            results["not_run"].append({"label": label, "way": way, "reason": reason, "failed": True})
            continue
        row = {
            "label": label,
            "way": way,
            "limits": limits,
            "tasks": states,
            "startup_s": stats.get("startup_s"),
            **analyse(log, stats, wall, limits),
        }
        results["runs"].append(row)
        say(f"quota-bound: {label}, {way}: {row}")
    return results


def run_name(r: dict) -> str:
    return f"{r['label']} ({r.get('way', IN_PROCESS)})"


def goal_rows(res: dict) -> list[tuple[str, str, object, bool]]:
    rows = []
    for r in res["runs"]:
        name = run_name(r)
        spent = [r[f"{x}_spent_min"] for x in RESOURCES if r.get(f"{x}_spent_min") is not None]
        lo = min(spent) if spent else None
        rows.append(
            (
                f"{name}: spent per closed window (min, of what it could spend)",
                f">= {GOALS['spent_share']:.0%}",
                lo,
                lo is not None and lo >= GOALS["spent_share"],
            )
        )
        for k in ("median", "max"):
            v = r[f"reset_gap_{k}_s"]
            rows.append(
                (
                    f"{name}: reset + 1 s to next request ({k})",
                    f"<= {GOALS['reset_gap_s']} s",
                    v,
                    v is not None and v <= GOALS["reset_gap_s"],
                )
            )
        over = round(r["wall_windows"] - r["floor_windows"], 2)
        rows.append(
            (
                f"{name}: wall vs floor (windows over)",
                f"<= {GOALS['windows_over_floor']}",
                over,
                over <= GOALS["windows_over_floor"],
            )
        )
        rows.append((f"{name}: secondary-limit hits", "0", r["secondary_hits"], r["secondary_hits"] == 0))
    for n in res.get("not_run", []):
        if n["failed"]:  # a run that could not finish meets no goal; a skipped one is only printed
            rows.append((f"{run_name(n)}: run to the end", "done", "failed", False))
    return rows


def render(res: dict, table) -> str:
    head = (
        f"6. Quota-bound runs ({res['slots']} slots; windows of {res['window_s']} s, "
        f"reserve {res['reserve']}; limits sized so the workload of {res['probe_units']} units needs "
        f"~{WINDOWS} windows of each resource; dataset {res['spec']}). Ways: {IN_PROCESS} (the DAG's "
        f"tasks in threads, InProcessRun); {DAGS_TEST} (one process, tasks one at a time; wall from "
        f"the first task's start); {CELERY} of {CELERY_CONCURRENCY} processes (wall from the trigger). "
        "Start-up (not in wall): dags test's `db migrate`, CLI and DAG parse; the cluster's start"
    )
    rows = [
        [
            r["label"],
            r.get("way", IN_PROCESS),
            f"{r['limits']['core']}/{r['limits']['graphql']}",
            f"{r['units']['core']}/{r['units']['graphql']}",
            r["core_closed_windows"],
            f"{r['core_spent_min']} ({r['core_spent_of_usable_min']})",
            r["graphql_closed_windows"],
            f"{r['graphql_spent_min']} ({r['graphql_spent_of_usable_min']})",
            r["reset_gaps"],
            r["reset_gap_median_s"],
            r["reset_gap_max_s"],
            f"{r['same_resource_gap_median_s']} / {r['same_resource_gap_max_s']}",
            r["secondary_hits"],
            r["wall_s"],
            r["wall_windows"],
            r["floor_windows"],
            r.get("startup_s"),
            "/".join(r["tasks"]["slots"])
            + f", commit {r['tasks']['commit']}"
            + (f", {r['tasks']['deferrals']} deferrals" if r["tasks"].get("deferrals") is not None else ""),
        ]
        for r in res["runs"]
    ]
    headers = [
        "run",
        "way",
        "limit core/gql",
        "units core/gql",
        "core windows",
        "core spent min (of usable)",
        "gql windows",
        "gql spent min (of usable)",
        "resets",
        "gap med s",
        "gap max s",
        "same-resource gap med/max s",
        "secondary",
        "wall s",
        "wall windows",
        "floor",
        "start-up s",
        "tasks",
    ]
    out = head + "\n" + table(headers, rows)
    for n in res.get("not_run", []):
        out += f"\n  {run_name(n)}: {'failed' if n['failed'] else 'skipped'}: {n['reason']}"
    return out


if __name__ == "__main__":  # python bench/quota_bound.py: this section alone, raw figures
    import json

    print(json.dumps(run(), indent=2, default=str))
