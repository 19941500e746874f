"""Postgres side: schema, idempotent upserts of staged chunks, and read-backs.

Each chunk goes in one transaction: COPY into a temp table (one jsonb column, so unicode,
commas and newlines in profile text need no escaping of our own), then
``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` into the real table. The staged keys of a
chunk are deleted from Redis only after its transaction committed, so a crash or an outage
leaves them for the retry, and re-applying a chunk changes nothing.

Works with psycopg 3 (Airflow 3.x) and psycopg2 (Airflow 2.x): they differ only in COPY.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable
from typing import Any

from github_collector.records import USER_FIELDS

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MIGRATION_LOCK = 72_410_001  # pg_advisory_xact_lock key: concurrent runs migrate one at a time

DDL = [
    """CREATE TABLE IF NOT EXISTS github_repository (
        repo_id bigint PRIMARY KEY,
        full_name text NOT NULL,
        status text NOT NULL,
        unavailable_relations text[] NOT NULL DEFAULT '{}',
        relation_status jsonb,
        relation_state jsonb,
        stargazer_count integer,
        fork_count integer,
        watcher_count integer,
        first_seen_at timestamptz NOT NULL DEFAULT now(),
        fetched_at timestamptz NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS github_repo_request (
        requested_name text PRIMARY KEY,
        repo_id bigint,
        status text NOT NULL,
        detail text,
        checked_at timestamptz NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS github_user (
        user_id bigint PRIMARY KEY,
        node_id text,
        login text NOT NULL,
        type text,
        name text,
        company text,
        blog text,
        location text,
        email text,
        bio text,
        twitter_username text,
        public_repos integer,
        followers integer,
        following integer,
        created_at timestamptz,
        updated_at timestamptz,
        profile_fetched_at timestamptz,
        email_checked_at timestamptz,
        fetched_at timestamptz NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS github_repo_user (
        repo_id bigint NOT NULL REFERENCES github_repository (repo_id),
        user_id bigint NOT NULL REFERENCES github_user (user_id),
        relations text[] NOT NULL,
        contributions integer,
        starred_at timestamptz,
        forked_at timestamptz,
        first_seen_at timestamptz NOT NULL,
        last_seen_at timestamptz NOT NULL,
        PRIMARY KEY (repo_id, user_id),
        CHECK (relations <@ ARRAY['contributor', 'forker', 'stargazer', 'watcher']::text[])
    )""",
    "CREATE INDEX IF NOT EXISTS github_repo_user_user_idx ON github_repo_user (user_id)",
    """CREATE TABLE IF NOT EXISTS github_collect_run (
        run_key text PRIMARY KEY,
        dag_id text,
        run_id text,
        logical_date timestamptz,
        status text NOT NULL,
        counts jsonb,
        started_at timestamptz,
        finished_at timestamptz
    )""",
    "CREATE TABLE IF NOT EXISTS github_schema_version (version integer PRIMARY KEY)",
    # Columns added after a table first shipped go here, so older installs catch up.
    "ALTER TABLE github_repository ADD COLUMN IF NOT EXISTS relation_state jsonb",
]

# How a staged kind becomes rows. ``record`` lists jsonb_to_record's columns.
_USER_COLS = (
    "user_id bigint, node_id text, login text, type text, name text, company text, blog text,"
    " location text, email text, bio text, twitter_username text, public_repos integer,"
    " followers integer, following integer, created_at timestamptz, updated_at timestamptz,"
    " profile_complete boolean, email_known boolean, staged_at timestamptz"
)
# Profile columns: replaced only by a full profile, never by a list item.
_PROFILE = tuple(f for f in USER_FIELDS if f not in ("user_id", "node_id", "login", "type", "email"))

# Built from the fixed column names above; values arrive only by COPY.
UPSERT_USERS = f"""
INSERT INTO github_user AS u (user_id, node_id, login, type, {", ".join(_PROFILE)}, email,
                             profile_fetched_at, email_checked_at, fetched_at)
SELECT DISTINCT ON (r.user_id) r.user_id, r.node_id, r.login, r.type, {", ".join("r." + c for c in _PROFILE)},
       r.email,
       CASE WHEN r.profile_complete THEN r.staged_at END,
       CASE WHEN r.profile_complete AND r.email_known THEN r.staged_at END,
       r.staged_at
FROM _stage s, jsonb_to_record(s.doc) AS r({_USER_COLS})
ORDER BY r.user_id, r.profile_complete DESC, r.staged_at DESC
ON CONFLICT (user_id) DO UPDATE SET
    node_id = COALESCE(EXCLUDED.node_id, u.node_id),
    login = EXCLUDED.login,
    type = COALESCE(EXCLUDED.type, u.type),
    {", ".join(f"{c} = CASE WHEN EXCLUDED.profile_fetched_at IS NOT NULL THEN EXCLUDED.{c} ELSE u.{c} END" for c in _PROFILE)},
    -- a token without the email scope leaves email unknown, which must not erase a known one
    email = CASE WHEN EXCLUDED.email_checked_at IS NOT NULL THEN EXCLUDED.email ELSE u.email END,
    email_checked_at = COALESCE(EXCLUDED.email_checked_at, u.email_checked_at),
    profile_fetched_at = COALESCE(EXCLUDED.profile_fetched_at, u.profile_fetched_at),
    fetched_at = GREATEST(EXCLUDED.fetched_at, u.fetched_at)
"""  # noqa: S608

UPSERT_REPOS = """
INSERT INTO github_repository AS g (repo_id, full_name, status, unavailable_relations, relation_status,
                                   relation_state, stargazer_count, fork_count, watcher_count, fetched_at)
SELECT DISTINCT ON (r.repo_id) r.repo_id, r.full_name, r.status, r.unavailable_relations, r.relation_status,
       r.relation_state, r.stargazer_count, r.fork_count, r.watcher_count, r.staged_at
FROM _stage s, jsonb_to_record(s.doc) AS r(repo_id bigint, full_name text, status text,
     unavailable_relations text[], relation_status jsonb, relation_state jsonb, stargazer_count integer,
     fork_count integer, watcher_count integer, staged_at timestamptz)
WHERE r.repo_id IS NOT NULL
ORDER BY r.repo_id, r.staged_at DESC
ON CONFLICT (repo_id) DO UPDATE SET
    full_name = EXCLUDED.full_name,
    status = EXCLUDED.status,
    unavailable_relations = EXCLUDED.unavailable_relations,
    relation_status = EXCLUDED.relation_status,
    -- relations this run did not touch keep their stored state
    relation_state = COALESCE(g.relation_state, '{}'::jsonb) || COALESCE(EXCLUDED.relation_state, '{}'::jsonb),
    stargazer_count = EXCLUDED.stargazer_count,
    fork_count = EXCLUDED.fork_count,
    watcher_count = EXCLUDED.watcher_count,
    fetched_at = EXCLUDED.fetched_at
"""

UPSERT_REQUESTS = """
INSERT INTO github_repo_request AS q (requested_name, repo_id, status, detail, checked_at)
SELECT DISTINCT ON (r.requested) r.requested, r.repo_id, r.status, r.detail, r.staged_at
FROM _stage s, jsonb_to_record(s.doc) AS r(requested text, repo_id bigint, status text, detail text,
     staged_at timestamptz)
ORDER BY r.requested, r.staged_at DESC
ON CONFLICT (requested_name) DO UPDATE SET
    repo_id = COALESCE(EXCLUDED.repo_id, q.repo_id),
    status = EXCLUDED.status,
    detail = EXCLUDED.detail,
    checked_at = EXCLUDED.checked_at
"""

# Links arrive one per (repo, user, relation); fold them per pair, then merge with what is stored.
UPSERT_LINKS = """
WITH l AS (
    SELECT r.repo_id, r.user_id, array_agg(DISTINCT r.relation ORDER BY r.relation) AS relations,
           max(r.contributions) AS contributions, min(r.starred_at) AS starred_at,
           min(r.forked_at) AS forked_at, max(r.staged_at) AS seen
    FROM _stage s, jsonb_to_record(s.doc) AS r(repo_id bigint, user_id bigint, relation text,
         contributions integer, starred_at timestamptz, forked_at timestamptz, staged_at timestamptz)
    GROUP BY r.repo_id, r.user_id
)
INSERT INTO github_repo_user AS g (repo_id, user_id, relations, contributions, starred_at, forked_at,
                                  first_seen_at, last_seen_at)
SELECT repo_id, user_id, relations, contributions, starred_at, forked_at, seen, seen FROM l
ON CONFLICT (repo_id, user_id) DO UPDATE SET
    relations = ARRAY(SELECT DISTINCT x FROM unnest(g.relations || EXCLUDED.relations) AS x ORDER BY x),
    contributions = COALESCE(EXCLUDED.contributions, g.contributions),
    starred_at = COALESCE(EXCLUDED.starred_at, g.starred_at),
    forked_at = COALESCE(EXCLUDED.forked_at, g.forked_at),
    last_seen_at = GREATEST(EXCLUDED.last_seen_at, g.last_seen_at)
"""

UPSERT = {"repos": (UPSERT_REPOS, UPSERT_REQUESTS), "users": (UPSERT_USERS,), "links": (UPSERT_LINKS,)}


def ensure_schema(conn) -> None:
    """Create or migrate the tables; safe to run concurrently and repeatedly."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        for stmt in DDL:
            cur.execute(stmt)
        cur.execute(
            "INSERT INTO github_schema_version (version) VALUES (%s) ON CONFLICT DO NOTHING",
            (SCHEMA_VERSION,),
        )
    conn.commit()


def _csv_of_docs(docs: Iterable[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for d in docs:
        w.writerow([json.dumps(d, ensure_ascii=False)])
    return buf.getvalue()


def copy_docs(cur, docs: list[dict]) -> None:
    """COPY records into the session's temp table, with psycopg 3 or psycopg2."""
    data = _csv_of_docs(docs)
    sql = "COPY _stage (doc) FROM STDIN WITH (FORMAT csv)"
    if hasattr(cur, "copy"):  # psycopg 3
        with cur.copy(sql) as cp:
            cp.write(data)
    else:  # psycopg2
        cur.copy_expert(sql, io.StringIO(data))


def apply_chunk(conn, kind: str, docs: list[dict], staged_at: str) -> None:
    """Upsert one chunk in one transaction."""
    for d in docs:
        d.setdefault("staged_at", staged_at)
    with conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS _stage (doc jsonb) ON COMMIT DELETE ROWS")
        copy_docs(cur, docs)
        for stmt in UPSERT[kind]:
            cur.execute(stmt)
    conn.commit()


def fresh_profiles(conn, user_ids: list[int], max_age_hours: float) -> set[int]:
    """Users whose stored profile is younger than ``max_age_hours``."""
    if not user_ids:
        return set()
    with conn.cursor() as cur:
        cur.execute(
            "SELECT user_id FROM github_user WHERE user_id = ANY(%s) "
            "AND profile_fetched_at > now() - make_interval(secs => %s)",
            (list(user_ids), float(max_age_hours) * 3600),
        )
        rows = cur.fetchall()
    conn.commit()
    return {int(r[0]) for r in rows}


def previous_state(conn, requested: list[str]) -> dict[str, dict]:
    """What the last runs stored about these repositories, for incremental collection."""
    if not requested:
        return {}
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT q.requested_name, q.status, g.relation_state FROM github_repo_request q "
                "LEFT JOIN github_repository g ON g.repo_id = q.repo_id WHERE q.requested_name = ANY(%s)",
                (list(requested),),
            )
            rows = cur.fetchall()
        conn.commit()
    except Exception as exc:  # first run: no tables yet
        conn.rollback()
        if "does not exist" in str(exc):
            return {}
        raise
    return {name: {"status": status, "relation_state": state or {}} for name, status, state in rows}


def record_run(
    conn, run_key: str, dag_id: str, run_id: str, logical_date: Any, status: str, counts: dict
) -> None:
    with conn.cursor() as cur:
        cur.execute(
            """INSERT INTO github_collect_run (run_key, dag_id, run_id, logical_date, status, counts, started_at, finished_at)
               VALUES (%s, %s, %s, %s, %s, %s, now(), now())
               ON CONFLICT (run_key) DO UPDATE SET status = EXCLUDED.status, counts = EXCLUDED.counts,
                   finished_at = now()""",
            (run_key, dag_id, run_id, logical_date, status, json.dumps(counts)),
        )
    conn.commit()


def table_counts(conn) -> dict[str, int]:
    out = {}
    with conn.cursor() as cur:
        for t in ("github_repository", "github_repo_request", "github_user", "github_repo_user"):
            cur.execute(f"SELECT count(*) FROM {t}")  # noqa: S608 - fixed table names
            out[t] = int(cur.fetchone()[0])
    conn.commit()
    return out
