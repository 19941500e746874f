"""Commit throughput: stage N synthetic records in Redis the way fetch does, then time the
product's commit (run_tasks.commit_run) in its own process and read its peak RSS.

Records are users and (repo, user, relation) links in the proportions of a real collection
(about 42% users, 58% links), 100 repositories, some pairs holding two relations (the commit
folds them into one row). Each size is committed twice into a fresh database whose tables
exist but are empty (the one-off migration is not timed): first as inserts, then again under
a new run (every row conflicts: the daily-run case). With ``repeat`` > 1 each size is measured
that many times, each time in a fresh database, and the median run is reported with the range.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path

from common import BenchRedis, airflow_env, bench_redis, mb, pg_database, run_child, say

REPOS = 100
REPO_BASE = 700_000_000
USER_BASE = 10_000_000
ROLES = ("contributors", "forkers", "stargazers", "watchers")
STEP = 2000  # records per staged step, about what one packed GraphQL query brings


def _user(i: int) -> dict:
    uid = USER_BASE + i
    login = f"user-{i:x}"
    return {
        "user_id": uid,
        "node_id": f"U_kgDO{uid:08d}",
        "login": login,
        "type": "Organization" if i % 50 == 0 else "User",
        "name": f"Zoë Ünïcode {i}" if i % 3 else None,
        "company": "Acme, Inc.\nR&D" if i % 4 == 0 else None,
        "blog": f"https://{login}.dev" if i % 2 else None,
        "location": "São Paulo" if i % 5 == 0 else None,
        "email": f"{login}@example.com" if i % 3 == 0 else None,
        "bio": 'Builds "things", sometimes; tabs\tand commas,' if i % 2 == 0 else None,
        "twitter_username": None,
        "public_repos": i % 97,
        "followers": i % 1013,
        "following": i % 31,
        "created_at": "2015-03-04T05:06:07Z",
        "updated_at": "2026-05-06T07:08:09Z",
        "profile_complete": True,
        "email_known": True,
    }


def _links(n_links: int, n_users: int) -> list[dict]:
    from github_collector.records import link

    out = []
    for j in range(n_links):
        u, rnd = j % n_users, j // n_users
        # Every 7th user's second relation is to the same repository: one row, two relations.
        same_repo = rnd == 0 or u % 7 == 0
        repo = REPO_BASE + (u % REPOS if same_repo else (u + 1 + rnd) % REPOS)
        role = ROLES[(u + rnd) % 4]
        lk = link(repo, USER_BASE + u, role)
        if role == "contributors":
            lk["contributions"] = 1 + u % 500
        elif role == "stargazers":
            lk["starred_at"] = "2024-01-02T03:04:05Z"
        elif role == "forkers":
            lk["forked_at"] = "2023-01-02T03:04:05Z"
        out.append(lk)
    return out


def _repos() -> list[dict]:
    return [
        {
            "requested": f"bench-owner/repo-{i}",
            "repo_id": REPO_BASE + i,
            "full_name": f"bench-owner/repo-{i}",
            "status": "ok",
            "detail": None,
            "unavailable_relations": [],
            "relation_status": dict.fromkeys(ROLES, "ok"),
            "relation_state": {r: {"status": "ok", "count": 10, "hwm": None, "tried": []} for r in ROLES},
            "stargazer_count": 10,
            "fork_count": 10,
            "watcher_count": 10,
        }
        for i in range(REPOS)
    ]


def stage(r: BenchRedis, run_id: str, n_records: int) -> dict:
    """Stage ``n_records`` (users + links) plus the repositories, through Staging.write_step."""
    from github_collector.collector import Step
    from github_collector.settings import DAG_ID
    from github_collector.staging import Staging, run_namespace

    staging = Staging(r.client, run_namespace(r.prefix, DAG_ID, run_id))
    staging.save_plan(
        {
            "repositories": [],
            "relations": list(ROLES),
            "batch_size": 1,
            "full_refresh": False,
            "batches": [["x/y"]],
        }
    )
    staging.set_outcome(0, "done")
    n_users = round(n_records * 0.42)
    n_links = n_records - n_users
    t0 = time.perf_counter()
    staging.write_step(0, Step(state={}, repos=_repos()))
    for start in range(0, n_users, STEP):
        staging.write_step(
            0, Step(state={}, users=[_user(i) for i in range(start, min(n_users, start + STEP))])
        )
    links = _links(n_links, n_users)
    for start in range(0, n_links, STEP):
        staging.write_step(0, Step(state={}, links=links[start : start + STEP]))
    return {"users": n_users, "links": n_links, "stage_seconds": time.perf_counter() - t0}


def commit_once(r: BenchRedis, db: str, n_records: int, profile: str | None = None) -> dict:
    run_id = f"bench_commit_{uuid.uuid4().hex[:8]}"
    staged = stage(r, run_id, n_records)
    redis_bytes = r.own_memory()
    with tempfile.TemporaryDirectory(prefix="bench-af-") as home:
        env = airflow_env(Path(home), github_url="http://127.0.0.1:9", pg_db=db, prefix=r.prefix)
        args = ["commit", run_id, *(["--profile", profile] if profile else [])]
        rep = run_child(args, env=env)
    committed = sum(rep["counts"]["committed"].values())
    return {
        "records": committed,
        "users": staged["users"],
        "links": staged["links"],
        "stage_s": round(staged["stage_seconds"], 2),
        "staged_redis_mb": mb(redis_bytes),
        "commit_s": round(rep["seconds"], 2),
        "records_per_s": round(committed / rep["seconds"]),
        "rss_before_mb": mb(rep["rss_before"]),
        "peak_rss_mb": mb(rep["peak_rss"]),
        "rows": rep["counts"]["tables"],
    }


def create_schema(dsn: str) -> None:
    """The tables, empty: what every commit after an installation's first one finds."""
    import psycopg

    from github_collector import loader

    with psycopg.connect(dsn) as conn:
        loader.ensure_schema(conn)


def median_run(runs: list[dict]) -> dict:
    """The run with the median records/s, with the range over all runs and the highest peak RSS."""
    ordered = sorted(runs, key=lambda x: x["records_per_s"])
    mid = dict(ordered[(len(ordered) - 1) // 2])
    mid["records_per_s_range"] = [ordered[0]["records_per_s"], ordered[-1]["records_per_s"]]
    mid["peak_rss_mb_max"] = max(x["peak_rss_mb"] for x in runs)
    return mid


def run(sizes: list[int], repeat: int = 1) -> list[dict]:
    results = []
    for n in sizes:
        runs = []
        for i in range(repeat):
            tag = f" (run {i + 1} of {repeat})" if repeat > 1 else ""
            with bench_redis("commit") as r, pg_database("commit") as (db, dsn):
                create_schema(dsn)
                say(f"commit: staging and committing {n:,} records (insert){tag}")
                first = commit_once(r, db, n)
                say(f"commit: {n:,} records again (every row conflicts){tag}")
                again = commit_once(r, db, n)
            runs.append({"insert": first, "upsert": again})
        results.append(
            {
                "staged": n,
                "repeat": repeat,
                "insert": median_run([x["insert"] for x in runs]),
                "upsert": median_run([x["upsert"] for x in runs]),
                "runs": runs,
            }
        )
    return results
