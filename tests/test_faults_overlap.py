"""Two runs at the same time on overlapping repositories: a scheduled daily run and a backfill
run, each its own `airflow dags test` process, sharing the token pool, the Redis staging and
the target database.

Each run stages under its own namespace, so neither can resume, commit or drop the other's
records; the upserts on (repo_id, user_id) meet on the shared rows without duplicating them.
"""

from __future__ import annotations

import json
import subprocess

import psycopg
import pytest
from e2e_harness import AIRFLOW, airflow_env, duplicate_count, migrate, read_back
from support import diff_against_truth

from github_collector.records import RELATION_ROLE
from github_emulator import DatasetSpec, EmulatorConfig, EmulatorServer, TokenConfig, build_dataset

pytestmark = pytest.mark.faults
ALL = ["contributors", "forkers", "stargazers", "watchers"]
TOKENS = ["overlap-fault-token-a-3e71c0", "overlap-fault-token-b-c85d12"]


def _start(env: dict, date: str, conf: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [AIRFLOW, "dags", "test", "github_repo_users", date, "-c", json.dumps(conf)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_daily_run_and_a_backfill_at_once_on_overlapping_repos(tmp_path, fresh_db, key_prefix, figure):
    dataset = build_dataset(DatasetSpec(seed=67, n_repos=10, n_users=1500, max_per_repo=400))
    names = dataset.repo_names()
    daily, backfill = names[: len(names) * 2 // 3], names[len(names) // 3 :]
    shared = set(daily) & set(backfill)
    cfg = EmulatorConfig(
        tokens=[TokenConfig(name=f"t{i}", token=t, collaborator_repos=("*",)) for i, t in enumerate(TOKENS)],
        latency_ms=5,
    )
    with EmulatorServer(dataset, cfg) as srv:
        envs = {}
        for label in ("daily", "backfill"):
            home = tmp_path / label  # each process its own Airflow metadata; the product state is shared
            envs[label] = airflow_env(
                home, github_url=srv.url, tokens=TOKENS, pg_db=fresh_db[0], prefix=key_prefix
            )
            migrate(envs[label])
        procs = {}
        for label, repos, date in (("daily", daily, "2026-11-29"), ("backfill", backfill, "2026-10-03")):
            # full_refresh: each run lists all its repositories, even what the other already stored
            conf = {"repositories": repos, "relations": ALL, "batch_size": 3, "full_refresh": True}
            procs[label] = _start(envs[label], date, conf)
        assert procs["daily"].poll() is None, "the daily run ended before the backfill began"
        outputs = {label: p.communicate(timeout=600)[0] for label, p in procs.items()}
        for label, p in procs.items():
            assert p.returncode == 0, outputs[label][-3000:]
        stats = srv.stats()

    truth = dataset.truth(ALL, collaborator_repos=["*"])
    assert diff_against_truth(truth, *read_back(fresh_db[1])) == []
    assert duplicate_count(fresh_db[1]) == 0
    # Each run committed exactly its own repositories' records: no staging was mixed up.
    with psycopg.connect(fresh_db[1]) as c:
        runs = {
            r[0].date().isoformat(): (r[1], r[2])
            for r in c.execute("SELECT logical_date, status, counts FROM github_collect_run")
        }
    assert len(runs) == 2 and all(status == "complete" for status, _ in runs.values())
    for label, repos in (("daily", daily), ("backfill", backfill)):
        ids = {truth["repos"][n]["repo_id"] for n in repos if truth["repos"][n]["repo_id"]}
        want_links = sum(len(v["relations"]) for (r, _), v in truth["repo_users"].items() if r in ids)
        committed = runs["2026-11-29" if label == "daily" else "2026-10-03"][1]["committed"]
        assert committed["links"] == want_links, (label, committed)
        assert committed["repos"] == len(repos)
    assert all(v["relations"] <= set(RELATION_ROLE) for v in truth["repo_users"].values())
    figure(
        "overlapping runs (daily + backfill, at once)",
        shared_repos=len(shared),
        duplicates=0,
        final_data="exact",
        runs_complete=2,
        secondary_hits=stats["secondary_limit_hits"],
    )
