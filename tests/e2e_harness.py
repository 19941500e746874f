"""Run the real DAG through `airflow dags test` and read back what it stored."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
sys.path.insert(0, str(ROOT / "scripts"))
import demo  # noqa: E402  (scripts/ is not a package)


def airflow_env(
    home: Path, *, github_url: str, tokens: list[str], pg_db: str, prefix: str, extra: dict | None = None
) -> dict:
    """The demo's local Airflow environment, pointed at this test's emulator, database and prefix."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env = demo.airflow_env(home, pg_db, prefix, base=base)
    env["PYTHONPATH"] = str(ROOT / "plugins")
    env["AIRFLOW_CONN_GITHUB_DEFAULT"] = json.dumps(
        {
            "conn_type": "github_repo_users",
            "host": github_url,
            "password": tokens[0],
            "extra": {"tokens": tokens[1:], "reserve": 0},
        }
    )
    env.update(extra or {})
    return env


def migrate(env: dict) -> None:
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)


def dags_test(env: dict, conf: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [AIRFLOW, "dags", "test", "github_repo_users", "-c", json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _iso(v):
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return v


ROLE_COLUMNS = {"contributor": "contributions", "stargazer": "starred_at", "forker": "forked_at"}


def read_back(dsn: str) -> tuple[dict, dict, dict]:
    """(users, links, repos) in the shapes the collector produces."""
    from github_collector.records import USER_FIELDS

    with psycopg.connect(dsn) as conn:
        cols = ", ".join(USER_FIELDS)
        users = {}
        for row in conn.execute(f"SELECT {cols} FROM github_user"):  # noqa: S608 - fixed names
            rec = {f: _iso(v) for f, v in zip(USER_FIELDS, row, strict=True)}
            users[rec["user_id"]] = rec
        links = {}
        for rid, uid, rels, contributions, starred_at, forked_at in conn.execute(
            "SELECT repo_id, user_id, relations, contributions, starred_at, forked_at FROM github_repo_user"
        ):
            for role in rels:
                links[(rid, uid, role)] = {
                    "contributions": contributions,
                    "starred_at": _iso(starred_at),
                    "forked_at": _iso(forked_at),
                }
        repos = {}
        for requested, rid, status in conn.execute(
            "SELECT requested_name, repo_id, status FROM github_repo_request"
        ):
            repos[requested] = {
                "requested": requested,
                "repo_id": rid,
                "full_name": None,
                "status": status,
                "unavailable_relations": [],
                "relation_status": {},
                "stargazer_count": None,
                "watcher_count": None,
            }
        by_id = {
            r[0]: r
            for r in conn.execute(
                "SELECT repo_id, full_name, unavailable_relations, relation_status, stargazer_count, watcher_count"
                " FROM github_repository"
            )
        }
        for rec in repos.values():
            row = by_id.get(rec["repo_id"])
            if row:
                rec.update(
                    full_name=row[1],
                    unavailable_relations=list(row[2]),
                    relation_status=row[3] or {},
                    stargazer_count=row[4],
                    watcher_count=row[5],
                )
    return users, links, repos


def duplicate_count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT count(*) - count(DISTINCT (repo_id, user_id)) FROM github_repo_user"
        ).fetchone()[0]


def row_counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608 - fixed names
            for t in ("github_repository", "github_repo_request", "github_user", "github_repo_user")
        }
