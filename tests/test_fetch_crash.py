"""A fetch task killed mid-batch and retried ends with the same data, no duplicates, and
at most the page in flight fetched again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_harness import airflow_env, duplicate_count, read_back
from support import diff_against_truth
from task_runner import EXIT_AFTER_ENV

from github_collector.staging import Staging, run_namespace
from github_emulator import DatasetSpec, EmulatorConfig, EmulatorServer, TokenConfig, build_dataset

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
ALL = ["contributors", "forkers", "stargazers", "watchers"]
TOKEN = "crash-test-token-41c7"


@pytest.fixture(scope="module")
def dataset():
    return build_dataset(DatasetSpec(seed=23, n_repos=6, n_users=1500, max_per_repo=700))


def task(env: dict, *args: str, extra: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tests" / "task_runner.py"), *args],
        env=env | (extra or {}),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def graphql_and_rest_pages(srv) -> list[str]:
    return [f"{e['method']} {e['path']}" for e in srv.request_log() if e["status"] in (200, 304)]


@pytest.fixture()
def setup(dataset, tmp_path, pg_dsn, pg_database, key_prefix, redis_client):
    import psycopg

    db = f"{pg_database}_crash"
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{db}"')
    names = dataset.repo_names()
    cfg = EmulatorConfig(
        tokens=[TokenConfig(name="t1", token=TOKEN, collaborator_repos=tuple(names))], latency_ms=15
    )
    with EmulatorServer(dataset, cfg) as srv:
        env = airflow_env(tmp_path, github_url=srv.url, tokens=[TOKEN], pg_db=db, prefix=key_prefix)
        yield srv, env, f"host=127.0.0.1 port=5432 user=postgres dbname={db}", names
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _run_all(env, run_id, names, batches_expected=None):
    plan = task(env, "plan", run_id, json.dumps({"repositories": names, "batch_size": 50}))
    assert plan.returncode == 0, plan.stderr[-2000:]
    return json.loads(plan.stdout.strip().splitlines()[-1])


def test_injected_crash_after_k_steps_then_retry(setup, dataset, redis_client, key_prefix):
    srv, env, dsn, names = setup
    run_id = "crash-injected"
    summary = _run_all(env, run_id, names)
    assert summary["batches"] == 1
    crashed = task(env, "fetch", run_id, "0", "1", extra={EXIT_AFTER_ENV: "4"})
    assert crashed.returncode == 137, crashed.stderr[-1500:]
    staging = Staging(redis_client, run_namespace(key_prefix, "github_repo_users", run_id))
    assert staging.load_state(0) is not None  # the checkpoint survived the crash
    pages_before = graphql_and_rest_pages(srv)
    retried = task(env, "fetch", run_id, "0", "2", extra={EXIT_AFTER_ENV: "4"})
    assert retried.returncode == 0, retried.stderr[-1500:]
    committed = task(env, "commit", run_id)
    assert committed.returncode == 0, committed.stderr[-1500:]
    truth = dataset.truth(ALL, collaborator_repos=names)
    assert diff_against_truth(truth, *read_back(dsn)) == []
    assert duplicate_count(dsn) == 0
    rest_after = [p for p in graphql_and_rest_pages(srv)[len(pages_before) :] if p.startswith("GET")]
    assert not set(rest_after) & {p for p in pages_before if p.startswith("GET")}, (
        "a staged REST page was fetched again"
    )
