"""Postgres side: schema, idempotent upserts of staged chunks, and read-backs.

Each chunk goes in one transaction: the staged JSON bytes, as Redis holds them, are COPYed
into a temp table (one jsonb column; only COPY's own escaping is applied, so Python never
decodes or re-encodes a record), then ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` into
the real table, with the commit time as a parameter. The staged keys of a chunk are deleted
from Redis only after its transaction committed, so a crash or an outage leaves them for the
retry, and re-applying a chunk changes nothing.

Works with psycopg 3 (Airflow 3.x) and psycopg2 (Airflow 2.x): they differ only in COPY.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import random
import time
from collections.abc import Iterable, Sequence
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

# How a staged kind becomes rows. Each statement reads the chunk from the temp table
# ``_stage`` and takes the commit time as the parameter ``staged_at`` (a record that carries
# its own ``staged_at`` keeps it). Every SELECT feeding an upsert is ordered by the conflict
# key: two runs committing overlapping rows then lock them in the same order and cannot
# deadlock on each other's rows.
_USER_COLS = (
    "user_id bigint, node_id text, login text, type text, name text, company text, blog text,"
    " location text, email text, bio text, twitter_username text, public_repos integer,"
    " followers integer, following integer, created_at timestamptz, updated_at timestamptz,"
    " profile_complete boolean, email_known boolean, staged_at timestamptz"
)
# Profile columns: replaced only by a full profile, never by a list item.
_PROFILE = tuple(f for f in USER_FIELDS if f not in ("user_id", "node_id", "login", "type", "email"))
_SEEN = "COALESCE(r.staged_at, %(staged_at)s::timestamptz)"

# Built from the fixed column names above; values arrive only by COPY and parameters.
UPSERT_USERS = f"""
INSERT INTO github_user AS u (user_id, node_id, login, type, {", ".join(_PROFILE)}, email,
                             profile_fetched_at, email_checked_at, fetched_at)
SELECT DISTINCT ON (r.user_id) r.user_id, r.node_id, r.login, r.type, {", ".join("r." + c for c in _PROFILE)},
       r.email,
       CASE WHEN r.profile_complete THEN r.seen END,
       CASE WHEN r.profile_complete AND r.email_known THEN r.seen END,
       r.seen
FROM (SELECT r.*, {_SEEN} AS seen FROM _stage s, jsonb_to_record(s.doc) AS r({_USER_COLS})) r
ORDER BY r.user_id, r.profile_complete DESC, r.seen DESC
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

UPSERT_REPOS = f"""
INSERT INTO github_repository AS g (repo_id, full_name, status, unavailable_relations, relation_status,
                                   stargazer_count, fork_count, watcher_count, fetched_at)
SELECT DISTINCT ON (r.repo_id) r.repo_id, r.full_name, r.status, r.unavailable_relations, r.relation_status,
       r.stargazer_count, r.fork_count, r.watcher_count, r.seen
FROM (SELECT r.*, {_SEEN} AS seen
      FROM _stage s, jsonb_to_record(s.doc) AS r(repo_id bigint, full_name text, status text,
           unavailable_relations text[], relation_status jsonb, stargazer_count integer,
           fork_count integer, watcher_count integer, staged_at timestamptz)) r
WHERE r.repo_id IS NOT NULL
ORDER BY r.repo_id, r.seen DESC
ON CONFLICT (repo_id) DO UPDATE SET
    full_name = EXCLUDED.full_name,
    status = EXCLUDED.status,
    unavailable_relations = EXCLUDED.unavailable_relations,
    relation_status = EXCLUDED.relation_status,
    stargazer_count = EXCLUDED.stargazer_count,
    fork_count = EXCLUDED.fork_count,
    watcher_count = EXCLUDED.watcher_count,
    fetched_at = EXCLUDED.fetched_at
"""  # noqa: S608

# What incremental runs trust (a relation listed completely, with its count) is written last,
# after every user and link of the run committed: if the commit stops before, the stored state
# is still the previous run's, and the next run lists those relations again instead of
# skipping them as unchanged.
UPSERT_REPO_STATE = f"""
UPDATE github_repository AS g
SET relation_state = COALESCE(g.relation_state, '{{}}'::jsonb) || COALESCE(r.relation_state, '{{}}'::jsonb)
FROM (SELECT DISTINCT ON (r.repo_id) r.repo_id, r.relation_state
      FROM (SELECT r.*, {_SEEN} AS seen
            FROM _stage s, jsonb_to_record(s.doc) AS r(repo_id bigint, relation_state jsonb,
                 staged_at timestamptz)) r
      WHERE r.repo_id IS NOT NULL
      ORDER BY r.repo_id, r.seen DESC) r
WHERE g.repo_id = r.repo_id
"""  # noqa: S608

UPSERT_REQUESTS = f"""
INSERT INTO github_repo_request AS q (requested_name, repo_id, status, detail, checked_at)
SELECT DISTINCT ON (r.requested) r.requested, r.repo_id, r.status, r.detail, r.seen
FROM (SELECT r.*, {_SEEN} AS seen
      FROM _stage s, jsonb_to_record(s.doc) AS r(requested text, repo_id bigint, status text, detail text,
           staged_at timestamptz)) r
ORDER BY r.requested, r.seen DESC
ON CONFLICT (requested_name) DO UPDATE SET
    repo_id = COALESCE(EXCLUDED.repo_id, q.repo_id),
    status = EXCLUDED.status,
    detail = EXCLUDED.detail,
    checked_at = EXCLUDED.checked_at
"""  # noqa: S608

# Links arrive one per (repo, user, relation); fold them per pair, then merge with what is stored.
UPSERT_LINKS = f"""
WITH l AS (
    SELECT r.repo_id, r.user_id, array_agg(DISTINCT r.relation ORDER BY r.relation) AS relations,
           max(r.contributions) AS contributions, min(r.starred_at) AS starred_at,
           min(r.forked_at) AS forked_at, max({_SEEN}) AS seen
    FROM _stage s, jsonb_to_record(s.doc) AS r(repo_id bigint, user_id bigint, relation text,
         contributions integer, starred_at timestamptz, forked_at timestamptz, staged_at timestamptz)
    GROUP BY r.repo_id, r.user_id
)
INSERT INTO github_repo_user AS g (repo_id, user_id, relations, contributions, starred_at, forked_at,
                                  first_seen_at, last_seen_at)
SELECT repo_id, user_id, relations, contributions, starred_at, forked_at, seen, seen FROM l
ORDER BY repo_id, user_id
ON CONFLICT (repo_id, user_id) DO UPDATE SET
    relations = ARRAY(SELECT DISTINCT x FROM unnest(g.relations || EXCLUDED.relations) AS x ORDER BY x),
    contributions = COALESCE(EXCLUDED.contributions, g.contributions),
    starred_at = COALESCE(EXCLUDED.starred_at, g.starred_at),
    forked_at = COALESCE(EXCLUDED.forked_at, g.forked_at),
    last_seen_at = GREATEST(EXCLUDED.last_seen_at, g.last_seen_at)
"""  # noqa: S608

UPSERT = {
    "repos": (UPSERT_REPOS, UPSERT_REQUESTS),
    "users": (UPSERT_USERS,),
    "links": (UPSERT_LINKS,),
    "repo_state": (UPSERT_REPO_STATE,),
}
STAGE_TABLE_DDL = "CREATE TEMP TABLE IF NOT EXISTS _stage (doc jsonb) ON COMMIT DELETE ROWS"
COPY_STAGE = "COPY _stage (doc) FROM STDIN WITH (FORMAT text, ENCODING 'UTF8')"

# Transient conflicts between concurrent transactions: the chunk is simply applied again.
RETRY_SQLSTATES = {"40P01": "deadlock_detected", "40001": "serialization_failure"}
RETRY_ATTEMPTS = 5
RETRY_BACKOFF_S = 0.05


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


def encode_docs(docs: Iterable[dict]) -> list[bytes]:
    """Records as the JSON bytes staging stores, for callers that hold dicts."""
    return [json.dumps(d).encode() for d in docs]


# COPY text format: backslash, tab, CR and LF are the bytes that mean something in a line.
# JSON allows raw tab/CR/LF only as whitespace between tokens, but any of them is escaped
# here, so Postgres receives every value byte for byte, and rejects what is not JSON.
_COPY_ESCAPES = ((b"\\", b"\\\\"), (b"\t", b"\\t"), (b"\r", b"\\r"))


def copy_text(values: Sequence[bytes]) -> bytes:
    """One COPY text-format row per value (a single column), escaped."""
    if not values:
        return b""
    blob = b"\n".join(values)
    if blob.count(b"\n") != len(values) - 1:
        # A value holds a raw newline: escape value by value, backslashes first.
        return b"".join(_escape(v).replace(b"\n", b"\\n") + b"\n" for v in values)
    return _escape(blob) + b"\n"


def _escape(data: bytes) -> bytes:
    for raw, escaped in _COPY_ESCAPES:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


def copy_rows(cur, sql: str, data: bytes) -> None:
    """COPY ... FROM STDIN of ready-made bytes, with psycopg 3 or psycopg2."""
    if hasattr(cur, "copy"):  # psycopg 3
        with cur.copy(sql) as cp:
            cp.write(data)
    else:  # psycopg2
        cur.copy_expert(sql, io.BytesIO(data), size=1 << 20)


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error: ``sqlstate`` in psycopg 3, ``pgcode`` in psycopg2."""
    return getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)


class ChunkWriter:
    """Applies staged chunks on one connection, one transaction per chunk.

    The temp table is created once per session; a deadlock or serialization failure rolls
    the chunk back and applies it again (the upserts are idempotent), a few times.
    """

    def __init__(self, conn, attempts: int = RETRY_ATTEMPTS, backoff_s: float = RETRY_BACKOFF_S) -> None:
        self.conn = conn
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.retries = 0
        self._stage_ready = False

    def apply(self, kind: str, values: Sequence[bytes], staged_at: Any) -> None:
        """Upsert one chunk of staged JSON values in one transaction."""
        data = copy_text(values)
        statements = UPSERT[kind]
        params = {"staged_at": staged_at}
        for attempt in range(1, self.attempts + 1):
            try:
                with self.conn.cursor() as cur:
                    if not self._stage_ready:
                        cur.execute(STAGE_TABLE_DDL)
                    copy_rows(cur, COPY_STAGE, data)
                    for stmt in statements:
                        cur.execute(stmt, params)
                self.conn.commit()
            except Exception as exc:
                self._stage_ready = False  # a rollback also undoes a CREATE in this transaction
                with contextlib.suppress(Exception):
                    self.conn.rollback()
                code = sqlstate(exc)
                if code not in RETRY_SQLSTATES or attempt == self.attempts:
                    raise
                self.retries += 1
                delay = self.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random())
                log.warning(
                    "%s chunk of %d: %s (%s), attempt %d of %d; applying it again in %.2f s",
                    kind,
                    len(values),
                    RETRY_SQLSTATES[code],
                    code,
                    attempt,
                    self.attempts,
                    delay,
                )
                time.sleep(delay)
            else:
                self._stage_ready = True
                return


def apply_chunk(conn, kind: str, docs: Sequence[dict] | Sequence[bytes], staged_at: Any) -> None:
    """Upsert one chunk (records as dicts, or staged JSON bytes) in one transaction."""
    values = docs if not docs or isinstance(docs[0], bytes | bytearray) else encode_docs(docs)
    ChunkWriter(conn).apply(kind, values, staged_at)


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
