"""Backfills of the real DAG, on Airflow 2.11 and on Airflow 3, against the emulator.

Each test backfills 2026-11-01..03 with quota running out (a deferral the triggerer serves),
then runs the same dates one by one with `airflow dags test` into a second target database,
and checks both against the emulator's ground truth and against each other.

- Airflow 2.11: `airflow dags backfill` (the BackfillJob in the CLI process), LocalExecutor on
  a Postgres metadata database, `airflow triggerer` running beside it; the one-by-one runs go
  meanwhile.
- Airflow 3: `airflow backfill create`, which only records the runs: a scheduler, a
  dag-processor, a triggerer and the api-server's execution API (the LocalExecutor's workers
  talk to it) run them. Then the reprocess behaviours: `--dry-run` shows that `none` and
  `failed` would run none of the 3 succeeded dates and `completed` all of them, and
  `completed` runs them again, leaving the data exact.

Each test skips only under the other major version of Airflow.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from e2e_harness import (
    AIRFLOW,
    Service,
    airflow_env,
    airflow_major,
    dags_test,
    duplicate_count,
    free_port,
    metadata_url,
    migrate,
    read_back,
    stop_all,
)
from support import diff_against_truth

from github_emulator import DatasetSpec, EmulatorConfig, EmulatorServer, TokenConfig, build_dataset

pytestmark = pytest.mark.e2e

DAG_ID = "github_repo_users"
DATES = ["2026-11-01", "2026-11-02", "2026-11-03"]
ALL = ["contributors", "forkers", "stargazers", "watchers"]
TOKEN = "backfill-token-7f3a91c2"
SLOTS = "3"  # fewer mapped slots than the default 8: fewer task processes on a small machine
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
TIMEOUT = 900  # seconds for a whole backfill; generous for a slow, shared machine
AIRFLOW_MAJOR = airflow_major()
# Airflow 2.x: no "mini scheduler" in the task processes. It locks the dag_run row, then
# schedules downstream task instances; the BackfillJob's commit locks task instances, then
# the dag_run: Postgres deadlocks. The BackfillJob rolls back, which expires the task
# instances it tracks as running, and its next job heartbeat closes the shared scoped
# session: `_update_counters` then fails with DetachedInstanceError (apache/airflow#32991
# added the rollback). The BackfillJob schedules every task itself; nothing is lost.
AIRFLOW2_BACKFILL_CONFIG = {"AIRFLOW__SCHEDULER__SCHEDULE_AFTER_TASK_EXECUTION": "False"}


@pytest.fixture(scope="module")
def dataset():
    return build_dataset(DatasetSpec(seed=23, n_repos=6, n_users=600, max_per_repo=250))


@pytest.fixture()
def database(run_id):
    """database(label) -> (name, dsn) of a new, empty Postgres database; all dropped after the test."""
    made: list[str] = []

    def make(label: str) -> tuple[str, str]:
        name = f"ghc_test_{run_id}_{label}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # generated name, not user input
        made.append(name)
        return name, f"host=127.0.0.1 port=5432 user=postgres dbname={name}"

    yield make
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _tight_quota(window: float, core: int, graphql: int) -> EmulatorConfig:
    """One collaborator token with small windows of ``core`` and ``graphql`` units.

    A full collection of the 14 repositories costs 12 core and 17 GraphQL units, so the
    backfill's 3 runs, which start together on an empty target, need 36 and 51, and their
    9 fetch slots reserve 27 core units at once: budgets of 12-20 units per window run out
    unless the fetch phase is spread over several windows.
    """
    return EmulatorConfig(
        tokens=[
            TokenConfig(
                name="t1", token=TOKEN, core_limit=core, graphql_limit=graphql, collaborator_repos=("*",)
            )
        ],
        window_seconds=window,
    )


def _conn(url: str, **extra) -> str:
    return json.dumps(
        {"conn_type": "github_repo_users", "host": url, "password": TOKEN, "extra": {"reserve": 0, **extra}}
    )


def _backfill_env(
    tmp_path: Path, url: str, target, meta, key_prefix: str, max_inline_wait: float, extra: dict | None = None
) -> dict:
    """The Airflow environment of a backfill test: LocalExecutor on a Postgres metadata DB."""
    return airflow_env(
        tmp_path / "backfill",
        github_url=url,
        tokens=[TOKEN],
        pg_db=target[0],
        prefix=key_prefix + "bf:",
        metadata_db=metadata_url(meta[0]),
        executor="LocalExecutor",
        extra={
            "AIRFLOW_CONN_GITHUB_DEFAULT": _conn(url, max_inline_wait=max_inline_wait),
            "GITHUB_REPO_USERS_FETCH_SLOTS": SLOTS,
            **(extra or {}),
        },
    )


def _conf(dataset) -> dict:
    return {"repositories": dataset.repo_names(), "relations": ALL, "batch_size": 3}


def _tail(text: str, n: int = 4000) -> str:
    return text[-n:]


def _collect_runs(dsn: str) -> list[tuple[str, str, str]]:
    """(logical date, run_id, status) of every run the product recorded, by date."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT logical_date, run_id, status FROM github_collect_run ORDER BY logical_date"
        ).fetchall()
    return [(d.date().isoformat() if d else None, r, s) for d, r, s in rows]


def _one_by_one(tmp_path: Path, dataset, db: tuple[str, str], prefix: str) -> None:
    """The same dates as separate `airflow dags test` runs (SQLite metadata) into another database.

    Its own emulator (same dataset, default quota) and Redis prefix: the reference runs do not
    share a quota record with the backfill.
    """
    with EmulatorServer(
        dataset, EmulatorConfig(tokens=[TokenConfig(name="t1", token=TOKEN, collaborator_repos=("*",))])
    ) as srv:
        env = airflow_env(
            tmp_path / "one-by-one",
            github_url=srv.url,
            tokens=[TOKEN],
            pg_db=db[0],
            prefix=prefix,
            extra={"AIRFLOW_CONN_GITHUB_DEFAULT": _conn(srv.url), "GITHUB_REPO_USERS_FETCH_SLOTS": SLOTS},
        )
        migrate(env)
        for date in DATES:
            proc = dags_test(env, _conf(dataset), logical_date=date)
            assert proc.returncode == 0, _tail(proc.stdout + proc.stderr)


def _assert_same_exact_data(dataset, backfilled: str, one_by_one: str) -> None:
    truth = dataset.truth(ALL, collaborator_repos=["*"])
    got = read_back(backfilled)
    assert diff_against_truth(truth, *got) == []
    assert diff_against_truth(truth, *read_back(one_by_one)) == []
    assert duplicate_count(backfilled) == 0
    assert duplicate_count(one_by_one) == 0
    # read_back() holds GitHub's data only (no fetched_at, first/last_seen_at, profile_fetched_at)
    assert _differences(got, read_back(one_by_one)) == []
    assert len(got[1]) > 100
    runs = _collect_runs(one_by_one)
    assert [(d, s) for d, _, s in runs] == [(d, "complete") for d in DATES], runs


def _as_data(data: tuple[dict, dict, dict]) -> tuple[dict, dict, dict]:
    """read_back() with each relation's status as a state of the data, not of the run that stored it.

    A run that skips a list because its count matches the last complete listing records it
    as "unchanged": the stored list is as complete as when it was "ok". Runs done one after
    another skip what the first listed; a backfill's runs, started together on an empty
    database, each list everything. Both end with the same data.
    """
    users, links, repos = data
    same = {"unchanged": "ok"}
    repos = {
        name: {**r, "relation_status": {k: same.get(v, v) for k, v in r["relation_status"].items()}}
        for name, r in repos.items()
    }
    return users, links, repos


def _differences(a: tuple[dict, dict, dict], b: tuple[dict, dict, dict]) -> list[str]:
    """What differs between two read_back() results, entry by entry (the first 20)."""
    out = []
    for label, x, y in zip(("user", "link", "repo"), _as_data(a), _as_data(b), strict=True):
        for key in sorted(set(x) | set(y), key=str):
            if x.get(key) != y.get(key):
                out.append(f"{label} {key}: {x.get(key)} != {y.get(key)}")
    return out[:20]


def _served_deferrals(logs: Path, meta_dsn: str) -> list[str]:
    """The backfill tasks whose deferral the triggerer served, from their log files.

    The task's log says why it deferred (quota short), and Airflow writes what its trigger
    logged next to it, as ``attempt=N.log.trigger.<triggerer job id>.log``: the id must be a
    triggerer job of this metadata database, and the trigger must have fired.
    """
    with psycopg.connect(meta_dsn) as conn:
        triggerers = {
            str(r[0]) for r in conn.execute("SELECT id FROM job WHERE job_type = 'TriggererJob'").fetchall()
        }
    served = []
    for path in sorted((logs / f"dag_id={DAG_ID}").glob("run_id=backfill__*/**/*.log.trigger.*.log")):
        job_id = path.name.rsplit(".", 2)[-2]
        task_log = path.with_name(path.name.split(".log.trigger.")[0] + ".log")
        if (
            job_id in triggerers
            and "fired" in path.read_text(errors="replace").lower()
            and "deferring until" in task_log.read_text(errors="replace")
        ):
            served.append(str(path.relative_to(logs)))
    return served


@pytest.mark.skipif(
    AIRFLOW_MAJOR >= 3,
    reason="`airflow dags backfill` (the BackfillJob) exists only on Airflow 2.x; Airflow 3 backfills "
    "with `airflow backfill create` under a scheduler (test_airflow3_backfill_create_...)",
)
def test_airflow2_dags_backfill_matches_one_by_one_runs(tmp_path, dataset, database, key_prefix):
    target, reference, meta = database("bf"), database("ref"), database("af")
    # 5-second windows: Airflow 2.11's backfill resumes deferred tasks without a race (see the 3.x test)
    with EmulatorServer(dataset, _tight_quota(5, core=15, graphql=12)) as srv:
        # every exhaustion becomes a deferral, which the triggerer must serve
        env = _backfill_env(
            tmp_path, srv.url, target, meta, key_prefix, max_inline_wait=0, extra=AIRFLOW2_BACKFILL_CONFIG
        )
        migrate(env)
        # The tight quota alone binds only if the fetch outpaces the windows, which a slow
        # machine may not: the backfill's first GraphQL request also meets a secondary limit
        # whose retry-after (12 s) is longer than the resume lead a deferral ends before it.
        srv.inject("graphql_secondary_403", wait=12)
        backfill_cmd = [AIRFLOW, "dags", "backfill", "-s", DATES[0], "-e", DATES[-1]]
        backfill_cmd += ["-c", json.dumps(_conf(dataset)), DAG_ID]
        with (
            ThreadPoolExecutor(1) as pool,
            Service(
                [AIRFLOW, "triggerer", "--skip-serve-logs"], env, tmp_path / "triggerer.log"
            ) as triggerer,
            Service(backfill_cmd, env, tmp_path / "backfill.log") as backfill,
        ):
            started = time.monotonic()
            # the same dates one by one, meanwhile (the backfill mostly waits for quota)
            one_by_one = pool.submit(_one_by_one, tmp_path, dataset, reference, key_prefix + "ref:")
            code = backfill.wait(TIMEOUT)
            took = time.monotonic() - started
            assert code == 0, f"backfill exit {code}:\n{_tail(backfill.output())}"
            # no deadlock rolled the BackfillJob back (AIRFLOW2_BACKFILL_CONFIG): a rollback leaves
            # it one job heartbeat away from the DetachedInstanceError, a pass then proves little
            assert "Failed to commit task state" not in backfill.output(), _tail(backfill.output())
            assert triggerer.running(), _tail(triggerer.output())
            one_by_one.result(timeout=TIMEOUT)
        hits = srv.stats()["primary_limit_hits"]
        assert srv.app.pending_answers() == [], "the backfill never met the injected secondary limit"

    # Quota ran out during the backfill, tasks deferred, and the triggerer resumed them.
    served = _served_deferrals(tmp_path / "backfill" / "logs", meta[1])
    assert served, f"no deferral served by the triggerer ({hits} primary limit hits):\n" + _tail(
        triggerer.output()
    )
    assert f"{DAG_ID}/backfill__" in triggerer.output()
    with psycopg.connect(meta[1]) as conn:
        runs = conn.execute(
            "SELECT execution_date, run_type, state FROM dag_run WHERE dag_id = %s ORDER BY 1", (DAG_ID,)
        ).fetchall()
    assert [(d.date().isoformat(), t, s) for d, t, s in runs] == [(d, "backfill", "success") for d in DATES]
    recorded = _collect_runs(target[1])
    assert [(d, s) for d, _, s in recorded] == [(d, "complete") for d in DATES], recorded
    assert all(r.startswith("backfill__") for _, r, _ in recorded)
    _assert_same_exact_data(dataset, target[1], reference[1])
    print(
        f"backfill: {took:.0f} s, {len(served)} task logs with a served deferral, {hits} primary limit hits"
    )


def _wait(what: str, check, services: list[Service], timeout: float = TIMEOUT, every: float = 1.0):
    """Poll ``check()`` until it returns a true value; fail at once if a service died."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        for s in services:
            assert s.running(), f"{s.args[1]} exited while waiting for {what}:\n{_tail(s.output())}"
        assert time.monotonic() < end, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(every)


def _query(dsn: str, sql: str, *args) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, args).fetchall()


def _dag_ready(meta_dsn: str) -> bool:
    errors = _query(meta_dsn, "SELECT filename, stacktrace FROM import_error")
    assert not errors, f"the DAG did not import: {errors}"
    return bool(
        _query(
            meta_dsn,
            "SELECT 1 FROM dag d JOIN serialized_dag s USING (dag_id) WHERE d.dag_id = %s AND NOT d.is_paused",
            DAG_ID,
        )
    )


def _backfill_runs(meta_dsn: str, backfill_id: int) -> list[tuple[str, str, str]] | None:
    """(date, run type, state) of the backfill's runs once none is queued or running, else None."""
    rows = _query(
        meta_dsn,
        "SELECT logical_date, run_type, state FROM dag_run WHERE backfill_id = %s ORDER BY 1",
        backfill_id,
    )
    if len(rows) < len(DATES) or any(s in ("queued", "running") for _, _, s in rows):
        return None
    return [(d.date().isoformat(), t, s) for d, t, s in rows]


def _create_backfill(env: dict, conf: dict, *options: str) -> subprocess.CompletedProcess:
    cmd = [AIRFLOW, "backfill", "create", "--dag-id", DAG_ID, "--from-date", DATES[0], "--to-date", DATES[-1]]
    return subprocess.run(
        [*cmd, "--dag-run-conf", json.dumps(conf), *options],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _latest_backfill(meta_dsn: str) -> int:
    return _query(meta_dsn, "SELECT max(id) FROM backfill WHERE dag_id = %s", DAG_ID)[0][0]


@pytest.mark.skipif(
    AIRFLOW_MAJOR < 3,
    reason="`airflow backfill create` and its --reprocess-behavior exist only on Airflow 3; on 2.x "
    "test_airflow2_dags_backfill_matches_one_by_one_runs covers `airflow dags backfill`",
)
def test_airflow3_backfill_create_matches_one_by_one_runs_and_reprocesses(
    tmp_path, dataset, database, key_prefix
):
    target, reference, meta = database("bf"), database("ref"), database("af")
    port = free_port()
    conf = _conf(dataset)
    # Airflow 3.3's scheduler can fail a task whose trigger fired within seconds of its
    # deferral: it handles the worker's exit from defer() after the resumed attempt started
    # (apache/airflow#71580, #72716). The product retries the task from its checkpoint, but
    # each retry costs the DAG's retry_delay. So waits of up to 8 s are slept in the fetch
    # (max_inline_wait) and the others are deferred: 20 GraphQL units per 20-second window
    # for 51 run out at least twice, the second time early in a window, whose end is then
    # many seconds away: a deferral the triggerer serves.
    with EmulatorServer(dataset, _tight_quota(20, core=60, graphql=20)) as srv:
        env = _backfill_env(
            tmp_path,
            srv.url,
            target,
            meta,
            key_prefix,
            max_inline_wait=8,
            extra={
                # the LocalExecutor's workers run tasks through the api-server's execution API
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                # Backfill runs of a paused DAG are not started; unpaused, the scheduler would also
                # make a scheduled run of its own, unless it ignores the schedule.
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            },
        )
        migrate(env)
        # The tight quota alone yields a deferral only if the fetch outpaces the windows, which
        # a slow machine may not: the backfill's first GraphQL request also meets a secondary
        # limit whose retry-after (25 s) is past max_inline_wait.
        srv.inject("graphql_secondary_403", wait=25)
        api = [AIRFLOW, "api-server", "--apps", "execution", "-H", "127.0.0.1", "-p", str(port), "-w", "1"]
        commands = {
            "api-server": api,
            "scheduler": [AIRFLOW, "scheduler", "--skip-serve-logs"],
            "dag-processor": [AIRFLOW, "dag-processor"],
            "triggerer": [AIRFLOW, "triggerer", "--skip-serve-logs"],
        }
        services = [Service(cmd, env, tmp_path / f"{name}.log") for name, cmd in commands.items()]
        try:
            for s in services:
                s.start()
            _wait("the DAG to be parsed", lambda: _dag_ready(meta[1]), services, timeout=300)

            started = time.monotonic()
            proc = _create_backfill(env, conf)
            assert proc.returncode == 0, _tail(proc.stdout + proc.stderr)
            first = _latest_backfill(meta[1])
            runs = _wait("the backfill's runs", lambda: _backfill_runs(meta[1], first), services)
            assert runs == [(d, "backfill", "success") for d in DATES]
            took = time.monotonic() - started
            hits = srv.stats()["primary_limit_hits"]
            assert srv.app.pending_answers() == [], "the backfill never met the injected secondary limit"
            served = _served_deferrals(tmp_path / "backfill" / "logs", meta[1])
            assert served, f"no deferral served by the triggerer ({hits} primary limit hits):\n" + _tail(
                services[-1].output()
            )
            recorded = _collect_runs(target[1])
            assert [(d, s) for d, _, s in recorded] == [(d, "complete") for d in DATES], recorded
            assert all(r.startswith("backfill__") for _, r, _ in recorded)

            # The same dates one by one, while the scheduler marks the backfill complete.
            _one_by_one(tmp_path, dataset, reference, key_prefix + "ref:")
            _assert_same_exact_data(dataset, target[1], reference[1])

            # Reprocess behaviours, for dates whose runs all succeeded.
            for behaviour, expected in (("none", []), ("failed", []), ("completed", DATES)):
                proc = _create_backfill(env, conf, "--reprocess-behavior", behaviour, "--dry-run")
                assert proc.returncode == 0, _tail(proc.stdout + proc.stderr)
                listed = proc.stdout.split("Runs to be attempted:")[-1]
                assert [d for d in DATES if d in listed] == expected, (behaviour, listed)

            # `completed` runs the 3 dates again: the same runs, cleared and queued under a new
            # backfill (only one backfill of a DAG may be active, and the scheduler marks the
            # first complete every 30 s).
            _wait(
                "the first backfill to be marked complete",
                lambda: _query(meta[1], "SELECT completed_at FROM backfill WHERE id = %s", first)[0][0],
                services,
                timeout=300,
            )
            before = dict(_query(target[1], "SELECT run_id, finished_at FROM github_collect_run"))
            proc = _create_backfill(env, conf, "--reprocess-behavior", "completed")
            assert proc.returncode == 0, _tail(proc.stdout + proc.stderr)
            again = _latest_backfill(meta[1])
            assert again != first
            runs = _wait("the reprocessed runs", lambda: _backfill_runs(meta[1], again), services)
            assert runs == [(d, "backfill", "success") for d in DATES]
            assert _query(meta[1], "SELECT count(*) FROM dag_run WHERE dag_id = %s", DAG_ID)[0][0] == len(
                DATES
            )
        finally:
            stop_all(services, grace=5)  # nothing of theirs is needed any more

    after = dict(_query(target[1], "SELECT run_id, finished_at FROM github_collect_run"))
    assert set(after) == set(before) and all(after[r] > before[r] for r in before)
    recorded = _collect_runs(target[1])
    assert [(d, s) for d, _, s in recorded] == [(d, "complete") for d in DATES], recorded
    _assert_same_exact_data(dataset, target[1], reference[1])
    # Airflow 3.3's "state mismatch" on resumed deferred tasks (apache/airflow#72716), if any
    mismatches = (tmp_path / "scheduler.log").read_text(errors="replace").count("state attribute is")
    print(
        f"backfill: {took:.0f} s, {len(served)} task logs with a served deferral, {hits} primary limit "
        f"hits, {mismatches} resumed tasks failed by the scheduler and retried"
    )
