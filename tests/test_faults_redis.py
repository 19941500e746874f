"""Redis lost mid-run: restarted without persistence, or flushed, at a random point.

By design the run then fails loudly and is never recorded as complete: the staged records
of pages already read are gone, and refetching them inside the same run would need the
finished fetch slots to run again, which only a cleared run does. Clearing the whole run
collects again and ends exact. With AOF persistence the same crash is survived: the tasks
that lost their connection are retried and resume from their checkpoints.
"""

from __future__ import annotations

import random
import threading
import time

import psycopg
import pytest
from e2e_harness import duplicate_count, read_back
from fault_harness import ALL, InProcessRun, set_connections
from private_redis import PrivateRedis
from support import diff_against_truth

from github_collector.staging import Staging, run_namespace
from github_emulator import DatasetSpec, EmulatorConfig, EmulatorServer, TokenConfig, build_dataset

pytestmark = pytest.mark.faults
TOKENS = ["redis-fault-token-a-51c2e9", "redis-fault-token-b-a7d0c4"]
PREFIX = "ghc-fault:"


@pytest.fixture(scope="module")
def dataset():
    return build_dataset(DatasetSpec(seed=41, n_repos=8, n_users=900, max_per_repo=300))


def _start(dataset, tmp_path, monkeypatch, fresh_db, appendonly: bool):
    cfg = EmulatorConfig(
        tokens=[TokenConfig(name=f"t{i}", token=t, collaborator_repos=("*",)) for i, t in enumerate(TOKENS)],
        latency_ms=8,  # slow enough that a run spans many staged steps
    )
    srv = EmulatorServer(dataset, cfg).start()
    rds = PrivateRedis(tmp_path, appendonly=appendonly).start()
    set_connections(
        monkeypatch, github_url=srv.url, tokens=TOKENS, pg_db=fresh_db[0], prefix=PREFIX, redis_port=rds.port
    )
    return srv, rds


def _run_in_background(run: InProcessRun, conf: dict, retries: int) -> tuple[threading.Thread, dict]:
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(run.run(conf, retries=retries)))
    thread.start()
    return thread, box


def _wait_for_pages(rds: PrivateRedis, run_id: str, pages: int, thread: threading.Thread) -> None:
    staging = Staging(rds.client(), run_namespace(PREFIX, "github_repo_users", run_id))
    while thread.is_alive() and staging.stats().get("pages", 0) < pages:
        time.sleep(0.005)
    assert thread.is_alive(), "the run finished before the fault: raise the latency"


def _runs(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as c:
        try:
            return [r[0] for r in c.execute("SELECT status FROM github_collect_run")]
        except psycopg.errors.UndefinedTable:
            return []


@pytest.mark.parametrize("how", ["restart without persistence", "flush"])
def test_lost_staging_fails_loudly_and_a_cleared_run_is_exact(
    how, dataset, tmp_path, monkeypatch, fresh_db, figure
):
    seed = random.randrange(10_000)
    at_page = 3 + seed % 12
    srv, rds = _start(dataset, tmp_path, monkeypatch, fresh_db, appendonly=False)
    try:
        names = dataset.repo_names()
        conf = {"repositories": names, "batch_size": 2}
        run_id = f"redis-loss-{seed}"
        thread, box = _run_in_background(InProcessRun(run_id, slots=2), conf, retries=1)
        _wait_for_pages(rds, run_id, at_page, thread)
        if how == "flush":
            rds.client().flushall()
        else:
            rds.restart()
        thread.join(timeout=300)
        commit = box["commit"]
        assert commit.state == "failed"
        assert "staging in Redis is gone" in str(commit.error)
        assert type(commit.error).__name__ == "AirflowFailException"  # retrying cannot help
        slot_errors = [str(o.error) for o in box["slots"].values() if o.state == "failed"]
        # Nothing is presented as complete: no run record says so, and nothing was upserted.
        assert "complete" not in _runs(fresh_db[1])

        # Clearing the whole run (plan included) collects again, exactly.
        again = InProcessRun(run_id, slots=2).run(conf)
        assert again["commit"].state == "success", repr(again["commit"].error)
        truth = dataset.truth(ALL, collaborator_repos=["*"])
        assert diff_against_truth(truth, *read_back(fresh_db[1])) == []
        assert duplicate_count(fresh_db[1]) == 0
        assert _runs(fresh_db[1]) == ["complete"]
        figure(
            f"redis lost ({how})",
            seed=seed,
            at_page=at_page,
            outcome="run failed loudly, nothing recorded complete",
            failed_slots=len(slot_errors),
            after_clear="exact",
        )
    finally:
        rds.stop()
        srv.stop()


def test_with_aof_a_redis_crash_is_survived_and_exact(dataset, tmp_path, monkeypatch, fresh_db, figure):
    seed = random.randrange(10_000)
    at_page = 3 + seed % 12
    srv, rds = _start(dataset, tmp_path, monkeypatch, fresh_db, appendonly=True)
    try:
        names = dataset.repo_names()
        run_id = f"redis-aof-{seed}"
        thread, box = _run_in_background(
            InProcessRun(run_id, slots=2), {"repositories": names, "batch_size": 2}, retries=2
        )
        _wait_for_pages(rds, run_id, at_page, thread)
        before = len(srv.request_log())
        rds.restart()  # kill -9, then start on the same append-only file
        thread.join(timeout=300)
        assert box["commit"].state == "success", repr(box["commit"].error)
        truth = dataset.truth(ALL, collaborator_repos=["*"])
        assert diff_against_truth(truth, *read_back(fresh_db[1])) == []
        assert duplicate_count(fresh_db[1]) == 0
        log = srv.request_log()
        first = {e["path"] for e in log[:before] if e["method"] == "GET" and e["status"] == 200}
        again = {e["path"] for e in log[before:] if e["method"] == "GET" and e["status"] == 200}
        refetched = first & again - {"/rate_limit"}
        assert len(refetched) <= 2, refetched  # at most the step in flight of each slot
        figure(
            "redis crash with AOF",
            seed=seed,
            at_page=at_page,
            outcome="completed",
            rest_pages_refetched=len(refetched),
        )
    finally:
        rds.stop()
        srv.stop()
