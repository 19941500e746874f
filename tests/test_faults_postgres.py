"""Postgres lost during the commit: the connection revoked mid-chunk, and the commit killed mid-chunk.

A chunk is one transaction and its staged keys leave Redis only after it committed, so a
commit cut anywhere leaves either the whole chunk in Postgres or none of it, with the rest
still staged; the retried commit then ends exact.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from e2e_harness import duplicate_count, read_back
from fault_harness import ALL, InProcessRun, conn_env
from support import diff_against_truth

from github_collector import loader
from github_collector.staging import Staging, run_namespace
from github_emulator import DatasetSpec, EmulatorConfig, EmulatorServer, TokenConfig, build_dataset

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[1]
TOKEN = "pg-fault-token-93be01"
ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@pytest.fixture(scope="module")
def dataset():
    return build_dataset(DatasetSpec(seed=43, n_repos=6, n_users=1200, max_per_repo=400))


@pytest.fixture()
def owned_db(pg_database):
    """A database owned by a role of its own, so the test can revoke that role's access."""
    role = f"ghc_fault_{uuid.uuid4().hex[:8]}"
    db = f"{pg_database}_{role}"
    with psycopg.connect(ADMIN, autocommit=True) as c:
        c.execute(f"CREATE ROLE {role} LOGIN")  # generated names, not user input
        c.execute(f'CREATE DATABASE "{db}" OWNER {role}')
    yield role, db, f"host=127.0.0.1 port=5432 user=postgres dbname={db}"
    with psycopg.connect(ADMIN, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        c.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture()
def staged(dataset, owned_db, monkeypatch, key_prefix, redis_client):
    """A run whose fetches are done: everything is staged in Redis, nothing committed yet."""
    role, db, dsn = owned_db
    names = dataset.repo_names()
    cfg = EmulatorConfig(tokens=[TokenConfig(name="t", token=TOKEN, collaborator_repos=("*",))])
    with EmulatorServer(dataset, cfg) as srv:
        env = conn_env(github_url=srv.url, tokens=[TOKEN], pg_db=db, prefix=key_prefix, pg_user=role)
        env["GITHUB_REPO_USERS_COMMIT_CHUNK"] = "250"  # many chunks, so the cut falls inside the commit
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        run = InProcessRun(f"pg-{uuid.uuid4().hex[:6]}", slots=2)
        assert run.plan({"repositories": names, "batch_size": 3}).state == "success"
        for slot in range(2):
            assert run.collect(slot).state in ("success", "skipped")
    staging = Staging(redis_client, run_namespace(key_prefix, "github_repo_users", run.run_id))
    # The tables exist before the commit starts, so the test can lock one of them.
    with psycopg.connect(dsn) as c:
        c.execute(f"SET ROLE {role}")
        loader.ensure_schema(c)
    return run, staging, role, dsn, env


def _wait_blocked(role: str, timeout: float = 60) -> int:
    """The pid of the role's backend once it waits on a lock (inside a chunk's transaction)."""
    deadline = time.time() + timeout
    with psycopg.connect(ADMIN, autocommit=True) as c:
        while time.time() < deadline:
            row = c.execute(
                "SELECT pid FROM pg_stat_activity WHERE usename = %s AND wait_event_type = 'Lock'", (role,)
            ).fetchone()
            if row:
                return int(row[0])
            time.sleep(0.02)
    raise AssertionError("the commit never reached the locked table")


def _counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as c:
        return {
            t: c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608 - fixed names
            for t in ("github_user", "github_repo_user", "github_collect_run")
        }


def _check_exact(dataset, dsn: str) -> None:
    truth = dataset.truth(ALL, collaborator_repos=["*"])
    assert diff_against_truth(truth, *read_back(dsn)) == []
    assert duplicate_count(dsn) == 0


def test_connection_revoked_mid_chunk_keeps_staging_and_the_retry_is_exact(staged, dataset, figure):
    run, staging, role, dsn, _ = staged
    users_staged = staging.count("users")
    locker = psycopg.connect(dsn)
    locker.execute("LOCK TABLE github_user IN ACCESS EXCLUSIVE MODE")  # the users chunk will wait here
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(outcome=run.commit()))
    thread.start()
    _wait_blocked(role)
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f"ALTER ROLE {role} NOLOGIN")  # the outage: no new connection either
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
    thread.join(timeout=120)
    locker.rollback()
    locker.close()
    first = box["outcome"]
    assert first.state == "failed"
    assert _counts(dsn)["github_user"] == 0  # the cut chunk rolled back: nothing half-written
    assert staging.count("users") == users_staged  # and it is still staged
    assert "complete" not in {r for r in _run_statuses(dsn)}

    while_down = run.commit()  # Airflow's retry, while the database still refuses the role
    assert while_down.state == "failed"
    assert role in str(while_down.error) or "not permitted" in str(while_down.error)
    assert staging.count("users") == users_staged

    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f"ALTER ROLE {role} LOGIN")
    retried = run.commit()
    assert retried.state == "success", repr(retried.error)
    _check_exact(dataset, dsn)
    assert _run_statuses(dsn) == ["complete"]
    figure(
        "postgres connection revoked mid-chunk",
        staged_users=users_staged,
        rows_after_cut=0,
        retry_while_down="failed, staging kept",
        after_restore="exact",
    )


def test_commit_killed_mid_chunk_rolls_back_and_the_retry_is_exact(staged, dataset, figure):
    run, staging, role, dsn, env = staged
    users_staged = staging.count("users")
    locker = psycopg.connect(dsn)
    locker.execute("LOCK TABLE github_user IN ACCESS EXCLUSIVE MODE")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "task_runner.py"), "commit", run.run_id],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT / "plugins")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_blocked(role)  # COPY done, the upsert waits: the middle of the chunk's transaction
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    locker.rollback()
    locker.close()
    # The orphaned backend finishes its statement, finds its client gone, and rolls back.
    deadline = time.time() + 30
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (role,)).fetchone()[
            0
        ]:
            assert time.time() < deadline, "the killed commit's backend never went away"
            time.sleep(0.05)
    assert _counts(dsn)["github_user"] == 0
    assert staging.count("users") == users_staged
    retried = run.commit()
    assert retried.state == "success", repr(retried.error)
    _check_exact(dataset, dsn)
    figure("commit killed mid-chunk", staged_users=users_staged, rows_after_kill=0, after_retry="exact")


def _run_statuses(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as c:
        return [r[0] for r in c.execute("SELECT status FROM github_collect_run")]
