"""Postgres side: schema, idempotent upserts of staged chunks, and read-backs.

Each chunk goes in one transaction: the staged JSON bytes, as Redis holds them, are COPYed
into a temp table (one jsonb column; only COPY's own escaping is applied, so Python never
decodes or re-encodes a record), then ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` into
the real table, with the commit time as a parameter. The staged keys of a chunk are deleted
from Redis only after its transaction committed, so a crash or an outage leaves them for the
retry, and re-applying a chunk changes nothing.

A chunk Postgres refuses because of a record's values (a data exception, a constraint) is
split in halves until the refused records are alone; those go to ``github_dead_letter`` as
the bytes staging held, and every other record of the chunk is committed. One odd record
never blocks a commit.

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

from github_collector.records import RELATION_ROLE, USER_FIELDS

# Lists whose pages carry full profiles and that a scheduled re-listing reads in full. Author
# lists carry profiles too, but are never re-listed (only their new items are read), so their
# authors' profiles are refreshed like contributors'.
INLINE_PROFILES = ("forkers", "stargazers", "watchers")
# Roles github_repo_user_relation.relation may hold (records.RELATION_ROLE's values).
ROLES = tuple(RELATION_ROLE.values())
_ROLE_CHECK = "relation IN (" + ", ".join(f"'{r}'" for r in ROLES) + ")"

log = logging.getLogger(__name__)

# 1: github_repo_user a table of pairs. 2: one row per (repo, user, relation) with its
# lifecycle, github_repo_user a view of the current ones; github_dead_letter. 3: author
# relations (issue_author, pull_request_author, discussion_author) with their items.
SCHEMA_VERSION = 3
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
        fetched_at timestamptz NOT NULL,
        gone_at timestamptz
    )""",
    # An account GitHub no longer serves (deleted or suspended): since when. Added in place to
    # tables made before it; a full profile seen again clears it.
    "ALTER TABLE github_user ADD COLUMN IF NOT EXISTS gone_at timestamptz",
    """CREATE TABLE IF NOT EXISTS github_repo_user_relation (
        repo_id bigint NOT NULL REFERENCES github_repository (repo_id),
        user_id bigint NOT NULL REFERENCES github_user (user_id),
        relation text NOT NULL,
        contributions integer,
        starred_at timestamptz,
        forked_at timestamptz,
        first_seen_at timestamptz NOT NULL,
        last_seen_at timestamptz NOT NULL,
        removed_at timestamptz,
        PRIMARY KEY (repo_id, user_id, relation)
    )""",
    "CREATE INDEX IF NOT EXISTS github_repo_user_relation_user_idx ON github_repo_user_relation (user_id)",
    # Author relations: how many items the user opened, the first and the last (from
    # github_authored_item, recounted after each commit; NULL for the other relations).
    "ALTER TABLE github_repo_user_relation ADD COLUMN IF NOT EXISTS authored_items integer",
    "ALTER TABLE github_repo_user_relation ADD COLUMN IF NOT EXISTS first_authored_at timestamptz",
    "ALTER TABLE github_repo_user_relation ADD COLUMN IF NOT EXISTS last_authored_at timestamptz",
    # Every issue, pull request and discussion read, with its author: what makes the counts
    # exact however often an item is read. author_id is set for a User or Bot (a github_user
    # row); a Mannequin keeps type and login only; a deleted account (GitHub's null author)
    # neither.
    """CREATE TABLE IF NOT EXISTS github_authored_item (
        repo_id bigint NOT NULL,
        relation text NOT NULL,
        number integer NOT NULL,
        created_at timestamptz,
        author_id bigint,
        author_type text,
        author_login text,
        first_seen_at timestamptz NOT NULL,
        last_seen_at timestamptz NOT NULL,
        PRIMARY KEY (repo_id, relation, number)
    )""",
    "CREATE INDEX IF NOT EXISTS github_authored_item_author_idx ON github_authored_item (repo_id, relation, author_id)",
    # Staged records Postgres refused, as staging held them (bytea: jsonb may refuse them too).
    """CREATE TABLE IF NOT EXISTS github_dead_letter (
        run_key text NOT NULL,
        kind text NOT NULL,
        field text NOT NULL,
        payload bytea NOT NULL,
        sqlstate text,
        error text NOT NULL,
        commit_time timestamptz,
        failed_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (run_key, kind, field)
    )""",
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
    # Contributors GitHub lists without an account (REST anon=true entries: beyond the 500
    # authors it links, or commits by an email no account claims).
    "ALTER TABLE github_repository ADD COLUMN IF NOT EXISTS anonymous_contributors integer",
    # Items no user authored, per relation and kind: {"issue_author": {"ghost": 3, "Mannequin": 2}}
    "ALTER TABLE github_repository ADD COLUMN IF NOT EXISTS authorless_items jsonb",
]
# The relation check, named as Postgres named the one schemas 1 and 2 created inline; replaced
# when it lacks a role (a table made before the author relations).
RELATION_CHECK = "github_repo_user_relation_relation_check"
FIND_RELATION_CHECK = (
    "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
    " WHERE conrelid = 'github_repo_user_relation'::regclass AND conname = %s"
)
REPLACE_RELATION_CHECK = [
    f"ALTER TABLE github_repo_user_relation DROP CONSTRAINT IF EXISTS {RELATION_CHECK}",
    f"ALTER TABLE github_repo_user_relation ADD CONSTRAINT {RELATION_CHECK} CHECK ({_ROLE_CHECK})",
]

# Today's shape of github_repo_user, one row per pair, over the relations not removed.
REPO_USER_VIEW = """CREATE VIEW github_repo_user AS
SELECT repo_id, user_id, array_agg(relation ORDER BY relation) AS relations,
       max(contributions) AS contributions, min(starred_at) AS starred_at, min(forked_at) AS forked_at,
       min(first_seen_at) AS first_seen_at, max(last_seen_at) AS last_seen_at
FROM github_repo_user_relation
WHERE removed_at IS NULL
GROUP BY repo_id, user_id"""

# Schema 1 kept pairs in a table: each pair's relations become rows, with the facts that belong
# to each (contributions to contributor, starred_at to stargazer, forked_at to forker).
MIGRATE_REPO_USER = [
    "LOCK TABLE github_repo_user IN ACCESS EXCLUSIVE MODE",  # no writer of the old shape slips in
    """INSERT INTO github_repo_user_relation (repo_id, user_id, relation, contributions, starred_at,
                                           forked_at, first_seen_at, last_seen_at)
    SELECT t.repo_id, t.user_id, r.relation,
           CASE WHEN r.relation = 'contributor' THEN t.contributions END,
           CASE WHEN r.relation = 'stargazer' THEN t.starred_at END,
           CASE WHEN r.relation = 'forker' THEN t.forked_at END,
           t.first_seen_at, t.last_seen_at
    FROM github_repo_user t, unnest(t.relations) AS r(relation)
    ORDER BY 1, 2, 3
    ON CONFLICT (repo_id, user_id, relation) DO NOTHING""",
    "DROP TABLE github_repo_user",
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
    " profile_complete boolean, email_known boolean, gone boolean, staged_at timestamptz"
)
# Profile columns: replaced only by a full profile, never by a list item.
_PROFILE = tuple(f for f in USER_FIELDS if f not in ("user_id", "node_id", "login", "type", "email"))
_SEEN = "COALESCE(r.staged_at, %(staged_at)s::timestamptz)"

# Built from the fixed column names above; values arrive only by COPY and parameters.
UPSERT_USERS = f"""
INSERT INTO github_user AS u (user_id, node_id, login, type, {", ".join(_PROFILE)}, email,
                             profile_fetched_at, email_checked_at, fetched_at, gone_at)
SELECT DISTINCT ON (r.user_id) r.user_id, r.node_id, r.login, r.type, {", ".join("r." + c for c in _PROFILE)},
       r.email,
       CASE WHEN r.profile_complete THEN r.seen END,
       CASE WHEN r.profile_complete AND r.email_known THEN r.seen END,
       r.seen,
       CASE WHEN r.gone THEN r.seen END
FROM (SELECT r.*, {_SEEN} AS seen FROM _stage s, jsonb_to_record(s.doc) AS r({_USER_COLS})) r
ORDER BY r.user_id, r.profile_complete DESC, r.gone DESC NULLS LAST, r.seen DESC
ON CONFLICT (user_id) DO UPDATE SET
    node_id = COALESCE(EXCLUDED.node_id, u.node_id),
    login = EXCLUDED.login,
    type = COALESCE(EXCLUDED.type, u.type),
    {", ".join(f"{c} = CASE WHEN EXCLUDED.profile_fetched_at IS NOT NULL THEN EXCLUDED.{c} ELSE u.{c} END" for c in _PROFILE)},
    -- a token without the email scope leaves email unknown, which must not erase a known one
    email = CASE WHEN EXCLUDED.email_checked_at IS NOT NULL THEN EXCLUDED.email ELSE u.email END,
    email_checked_at = COALESCE(EXCLUDED.email_checked_at, u.email_checked_at),
    profile_fetched_at = COALESCE(EXCLUDED.profile_fetched_at, u.profile_fetched_at),
    fetched_at = GREATEST(EXCLUDED.fetched_at, u.fetched_at),
    gone_at = CASE WHEN EXCLUDED.gone_at IS NOT NULL THEN COALESCE(u.gone_at, EXCLUDED.gone_at)
                   WHEN EXCLUDED.profile_fetched_at IS NOT NULL THEN NULL
                   ELSE u.gone_at END
"""  # noqa: S608

UPSERT_REPOS = f"""
INSERT INTO github_repository AS g (repo_id, full_name, status, unavailable_relations, relation_status,
                                   stargazer_count, fork_count, watcher_count, anonymous_contributors,
                                   fetched_at)
SELECT DISTINCT ON (r.repo_id) r.repo_id, r.full_name, r.status, r.unavailable_relations, r.relation_status,
       r.stargazer_count, r.fork_count, r.watcher_count, r.anonymous_contributors, r.seen
FROM (SELECT r.*, {_SEEN} AS seen
      FROM _stage s, jsonb_to_record(s.doc) AS r(repo_id bigint, full_name text, status text,
           unavailable_relations text[], relation_status jsonb, stargazer_count integer,
           fork_count integer, watcher_count integer, anonymous_contributors integer,
           staged_at timestamptz)) r
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
    -- known only when the contributors list was read to its end in this run
    anonymous_contributors = COALESCE(EXCLUDED.anonymous_contributors, g.anonymous_contributors),
    fetched_at = EXCLUDED.fetched_at
"""  # noqa: S608

# A repository stored before that now answers 404 (gone or private) or 451/403 (blocked): its
# own row says so, found by the id its requested name resolved to before. Its relations and
# counts stay as last seen.
UPDATE_GONE_REPOS = f"""
UPDATE github_repository AS g SET status = r.status, fetched_at = r.seen
FROM (SELECT DISTINCT ON (r.known_repo_id) r.known_repo_id, r.status, r.seen
      FROM (SELECT r.*, {_SEEN} AS seen
            FROM _stage s, jsonb_to_record(s.doc) AS r(known_repo_id bigint, status text,
                 staged_at timestamptz)) r
      WHERE r.known_repo_id IS NOT NULL AND r.status IN ('not_found', 'blocked')
      ORDER BY r.known_repo_id, r.seen DESC) r
WHERE g.repo_id = r.known_repo_id AND g.fetched_at <= r.seen
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

# Links arrive one per (repo, user, relation). A relation seen again after it was noticed gone
# is back (removed_at cleared), unless the removal was noticed after this sighting.
UPSERT_LINKS = f"""
INSERT INTO github_repo_user_relation AS g (repo_id, user_id, relation, contributions, starred_at,
                                           forked_at, first_seen_at, last_seen_at)
SELECT DISTINCT ON (r.repo_id, r.user_id, r.relation) r.repo_id, r.user_id, r.relation, r.contributions,
       r.starred_at, r.forked_at, r.seen, r.seen
FROM (SELECT r.*, {_SEEN} AS seen
      FROM _stage s, jsonb_to_record(s.doc) AS r(repo_id bigint, user_id bigint, relation text,
           contributions integer, starred_at timestamptz, forked_at timestamptz, number integer,
           staged_at timestamptz)) r
WHERE r.number IS NULL
ORDER BY r.repo_id, r.user_id, r.relation, r.seen DESC
ON CONFLICT (repo_id, user_id, relation) DO UPDATE SET
    contributions = COALESCE(EXCLUDED.contributions, g.contributions),
    starred_at = COALESCE(EXCLUDED.starred_at, g.starred_at),
    forked_at = COALESCE(EXCLUDED.forked_at, g.forked_at),
    first_seen_at = LEAST(EXCLUDED.first_seen_at, g.first_seen_at),
    last_seen_at = GREATEST(EXCLUDED.last_seen_at, g.last_seen_at),
    removed_at = CASE WHEN g.removed_at > EXCLUDED.last_seen_at THEN g.removed_at END
"""  # noqa: S608

# Authored items (link records with an item number): replaced by the latest sighting.
UPSERT_ITEMS = f"""
INSERT INTO github_authored_item AS g (repo_id, relation, number, created_at, author_id, author_type,
                                      author_login, first_seen_at, last_seen_at)
SELECT DISTINCT ON (r.repo_id, r.relation, r.number) r.repo_id, r.relation, r.number, r.created_at,
       r.author_id, r.author_type, r.author_login, r.seen, r.seen
FROM (SELECT r.*, {_SEEN} AS seen
      FROM _stage s, jsonb_to_record(s.doc) AS r(repo_id bigint, relation text, number integer,
           created_at timestamptz, author_id bigint, author_type text, author_login text,
           staged_at timestamptz)) r
WHERE r.number IS NOT NULL
ORDER BY r.repo_id, r.relation, r.number, r.seen DESC
ON CONFLICT (repo_id, relation, number) DO UPDATE SET
    created_at = EXCLUDED.created_at,
    author_id = EXCLUDED.author_id,
    author_type = EXCLUDED.author_type,
    author_login = EXCLUDED.author_login,
    first_seen_at = LEAST(EXCLUDED.first_seen_at, g.first_seen_at),
    last_seen_at = GREATEST(EXCLUDED.last_seen_at, g.last_seen_at)
"""  # noqa: S608

# After a run's items committed (the final pass), each author's count and first and last item
# are recounted from the items of the repositories in the chunk, and so are the items no user
# authored. A recount, never an increment: applying a chunk again changes nothing.
_CHUNK_REPOS = """SELECT DISTINCT r.repo_id
    FROM _stage s, jsonb_to_record(s.doc) AS r(repo_id bigint, relation_status jsonb)
    WHERE r.repo_id IS NOT NULL AND r.relation_status ?| %(author_relations)s::text[]"""
COUNT_AUTHORED = f"""
WITH tally AS (
    SELECT i.repo_id, i.author_id, i.relation, count(*) AS n, min(i.created_at) AS first_at,
           max(i.created_at) AS last_at
    FROM github_authored_item i
    WHERE i.repo_id IN ({_CHUNK_REPOS}) AND i.author_id IS NOT NULL
    GROUP BY i.repo_id, i.author_id, i.relation
), locked AS (
    SELECT g.repo_id, g.user_id, g.relation, t.n, t.first_at, t.last_at
    FROM tally t JOIN github_repo_user_relation g
      ON g.repo_id = t.repo_id AND g.user_id = t.author_id AND g.relation = t.relation
    WHERE g.authored_items IS DISTINCT FROM t.n OR g.first_authored_at IS DISTINCT FROM t.first_at
       OR g.last_authored_at IS DISTINCT FROM t.last_at
    ORDER BY g.repo_id, g.user_id, g.relation
    FOR UPDATE OF g
)
UPDATE github_repo_user_relation AS g
SET authored_items = l.n, first_authored_at = l.first_at, last_authored_at = l.last_at
FROM locked l
WHERE g.repo_id = l.repo_id AND g.user_id = l.user_id AND g.relation = l.relation
"""  # noqa: S608
COUNT_AUTHORLESS = f"""
UPDATE github_repository AS g SET authorless_items = a.doc
FROM (SELECT repo_id, jsonb_object_agg(relation, kinds) AS doc
      FROM (SELECT repo_id, relation, jsonb_object_agg(kind, n) AS kinds
            FROM (SELECT i.repo_id, i.relation, COALESCE(i.author_type, 'ghost') AS kind, count(*) AS n
                  FROM github_authored_item i
                  WHERE i.repo_id IN ({_CHUNK_REPOS}) AND i.author_id IS NULL
                  GROUP BY 1, 2, 3) x
            GROUP BY 1, 2) y
      GROUP BY 1) a
WHERE g.repo_id = a.repo_id AND g.authorless_items IS DISTINCT FROM a.doc
"""  # noqa: S608

# A relation a repository's record says was listed in full in this run (``listed_complete``)
# loses every user this run did not see: their rows were last seen before this run's commit
# time. Runs in the final pass, after every link of the run committed; a link of this run that
# went to the dead-letter table is not taken for a departure. Rows are locked in key order.
REMOVE_UNLISTED = """
WITH listed AS (
    SELECT DISTINCT ON (r.repo_id) r.repo_id, r.listed_complete
    FROM (SELECT r.*, COALESCE(r.staged_at, %(staged_at)s::timestamptz) AS seen
          FROM _stage s, jsonb_to_record(s.doc) AS r(repo_id bigint, listed_complete text[],
               staged_at timestamptz)) r
    WHERE r.repo_id IS NOT NULL
    ORDER BY r.repo_id, r.seen DESC
), gone AS (
    SELECT g.repo_id, g.user_id, g.relation
    FROM listed l
    JOIN unnest(%(relations)s::text[], %(roles)s::text[]) AS m(relation, role)
      ON m.relation = ANY(l.listed_complete)
    JOIN github_repo_user_relation g ON g.repo_id = l.repo_id AND g.relation = m.role
    WHERE g.removed_at IS NULL AND g.last_seen_at < %(staged_at)s::timestamptz
      AND NOT EXISTS (
          SELECT 1 FROM github_dead_letter d
          WHERE d.run_key = %(run_key)s AND d.commit_time = %(staged_at)s::timestamptz
            AND d.kind = 'links' AND d.field = g.repo_id || ':' || g.user_id || ':' || g.relation)
    ORDER BY g.repo_id, g.user_id, g.relation
    FOR UPDATE OF g
)
UPDATE github_repo_user_relation AS g SET removed_at = %(staged_at)s::timestamptz
FROM gone
WHERE g.repo_id = gone.repo_id AND g.user_id = gone.user_id AND g.relation = gone.relation
"""

UPSERT = {
    "repos": (UPSERT_REPOS, UPDATE_GONE_REPOS, UPSERT_REQUESTS),
    "users": (UPSERT_USERS,),
    "links": (UPSERT_LINKS, UPSERT_ITEMS),
    "repo_state": (UPSERT_REPO_STATE, REMOVE_UNLISTED, COUNT_AUTHORED, COUNT_AUTHORLESS),
}
# Which staged hash each kind reads: a dead letter is named by its staged record.
STAGED_KIND = {"repos": "repos", "users": "users", "links": "links", "repo_state": "repos"}
STAGE_TABLE_DDL = "CREATE TEMP TABLE IF NOT EXISTS _stage (doc jsonb) ON COMMIT DELETE ROWS"
COPY_STAGE = "COPY _stage (doc) FROM STDIN WITH (FORMAT text, ENCODING 'UTF8')"

# Transient conflicts between concurrent transactions: the chunk is simply applied again.
RETRY_SQLSTATES = {"40P01": "deadlock_detected", "40001": "serialization_failure"}
RETRY_ATTEMPTS = 5
RETRY_BACKOFF_S = 0.05
# Errors that come from a record's values, which applying the chunk again cannot fix: data
# exceptions (class 22: bad JSON, NUL, a timestamp out of range...), integrity constraints
# (class 23: a link to a user that was itself refused...), and a value past a size limit.
POISON_CLASSES = ("22", "23")
POISON_SQLSTATES = {"54000"}
DEAD_LETTER_TABLE = "github_dead_letter"
INSERT_DEAD_LETTER = """
INSERT INTO github_dead_letter AS d (run_key, kind, field, payload, sqlstate, error, commit_time, failed_at)
VALUES (%s, %s, %s, %s, %s, %s, %s::timestamptz, now())
ON CONFLICT (run_key, kind, field) DO UPDATE SET
    payload = EXCLUDED.payload, sqlstate = EXCLUDED.sqlstate, error = EXCLUDED.error,
    commit_time = EXCLUDED.commit_time, failed_at = EXCLUDED.failed_at
"""


def ensure_schema(conn) -> None:
    """Create or migrate the tables; safe to run concurrently and repeatedly."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        for stmt in DDL:
            cur.execute(stmt)
        cur.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass('github_repo_user')")
        row = cur.fetchone()
        relkind = row[0] if row else None
        if relkind == "r":  # schema 1: a table of pairs
            lock, copy, drop = MIGRATE_REPO_USER
            cur.execute(lock)
            cur.execute(copy)
            log.info("github_repo_user migrated: %d relations now in github_repo_user_relation", cur.rowcount)
            cur.execute(drop)
        if relkind != "v":
            cur.execute(REPO_USER_VIEW)
        cur.execute(FIND_RELATION_CHECK, (RELATION_CHECK,))
        row = cur.fetchone()
        if row is None or any(f"'{role}'" not in row[0] for role in ROLES):
            for stmt in REPLACE_RELATION_CHECK:
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


def is_poison(exc: BaseException) -> bool:
    """Whether Postgres refused a chunk for a record's values (see POISON_CLASSES)."""
    code = sqlstate(exc)
    return bool(code) and (code[:2] in POISON_CLASSES or code in POISON_SQLSTATES)


class ChunkWriter:
    """Applies staged chunks on one connection, one transaction per chunk.

    The temp table is created once per session; a deadlock or serialization failure rolls
    the chunk back and applies it again (the upserts are idempotent), a few times.

    With a ``run_key``, a chunk refused for a record's values is bisected: halves are applied
    (each in its own transaction) until the refused records stand alone, and each of those is
    written to ``github_dead_letter`` with its SQLSTATE and message. Without one, the error
    is raised.
    """

    def __init__(
        self,
        conn,
        attempts: int = RETRY_ATTEMPTS,
        backoff_s: float = RETRY_BACKOFF_S,
        run_key: str | None = None,
    ) -> None:
        self.conn = conn
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.run_key = run_key
        self.retries = 0
        self.splits = 0  # chunks split in halves to find refused records
        self._stage_ready = False

    def apply(
        self, kind: str, values: Sequence[bytes], staged_at: Any, fields: Sequence[bytes] | None = None
    ) -> int:
        """Upsert one chunk of staged JSON values; return how many were dead-lettered.

        ``fields`` are the values' keys in the staged hash, which name the dead letters.
        """
        try:
            self._apply(kind, values, staged_at)
            return 0
        except Exception as exc:
            if self.run_key is None or fields is None or not is_poison(exc):
                raise
            return self._bisect(kind, values, fields, staged_at, exc)

    def _bisect(
        self, kind: str, values: Sequence[bytes], fields: Sequence[bytes], staged_at: Any, exc: BaseException
    ) -> int:
        if len(values) == 1:
            self._dead_letter(kind, fields[0], values[0], staged_at, exc)
            return 1
        self.splits += 1
        mid = len(values) // 2
        dead = 0
        for part, keys in ((values[:mid], fields[:mid]), (values[mid:], fields[mid:])):
            try:
                self._apply(kind, part, staged_at)
            except Exception as sub:
                if not is_poison(sub):
                    raise
                dead += self._bisect(kind, part, keys, staged_at, sub)
        return dead

    def _dead_letter(self, kind: str, field: bytes, value: bytes, staged_at: Any, exc: BaseException) -> None:
        staged = STAGED_KIND[kind]
        name = field.decode("utf-8", "replace") if isinstance(field, bytes | bytearray) else str(field)
        code = sqlstate(exc)
        message = str(exc).strip()[:2000]
        with self.conn.cursor() as cur:
            cur.execute(
                INSERT_DEAD_LETTER, (self.run_key, staged, name, bytes(value), code, message, staged_at)
            )
        self.conn.commit()
        log.warning(
            "staged %s record %s refused by Postgres (%s: %s); kept in %s, the rest of its chunk is committed",
            staged,
            name,
            code,
            message.splitlines()[0] if message else "",
            DEAD_LETTER_TABLE,
        )

    def _apply(self, kind: str, values: Sequence[bytes], staged_at: Any) -> None:
        """Upsert one chunk of staged JSON values in one transaction."""
        data = copy_text(values)
        statements = UPSERT[kind]
        params = {"staged_at": staged_at, "run_key": self.run_key, **_ROLE_PARAMS}
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


# Relation names as staged repo records spell them, and as github_repo_user_relation does.
_ROLE_PARAMS = {
    "relations": list(RELATION_ROLE),
    "roles": list(RELATION_ROLE.values()),
    "author_relations": [r for r in RELATION_ROLE if r.endswith("_authors")],
}


def apply_chunk(conn, kind: str, docs: Sequence[dict] | Sequence[bytes], staged_at: Any) -> None:
    """Upsert one chunk (records as dicts, or staged JSON bytes) in one transaction."""
    values = docs if not docs or isinstance(docs[0], bytes | bytearray) else encode_docs(docs)
    ChunkWriter(conn).apply(kind, values, staged_at)


def dead_letter_count(conn, run_key: str, commit_time: Any) -> int:
    """Records of this run (of its current commit time) in the dead-letter table."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM github_dead_letter WHERE run_key = %s AND commit_time = %s::timestamptz",
            (run_key, commit_time),
        )
        n = int(cur.fetchone()[0])
    conn.commit()
    return n


def fresh_profiles(conn, user_ids: list[int], max_age_hours: float) -> set[int]:
    """Users whose stored profile is younger than ``max_age_hours``, or who are gone."""
    if not user_ids:
        return set()
    with conn.cursor() as cur:
        cur.execute(
            # An account GitHub no longer serves is not asked for again either.
            "SELECT user_id FROM github_user WHERE user_id = ANY(%s) "
            "AND (profile_fetched_at > now() - make_interval(secs => %s) OR gone_at IS NOT NULL)",
            (list(user_ids), float(max_age_hours) * 3600),
        )
        rows = cur.fetchall()
    conn.commit()
    return {int(r[0]) for r in rows}


def previous_state(conn, requested: list[str]) -> dict[str, dict]:
    """What the last runs stored about these repositories, for incremental collection: per
    requested name its status, the id it resolved to, and the relations' stored state."""
    if not requested:
        return {}
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT q.requested_name, q.status, q.repo_id, g.relation_state FROM github_repo_request q "
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
    return {
        name: {"status": status, "repo_id": repo_id, "relation_state": state or {}}
        for name, status, repo_id, state in rows
    }


# Users with a current relation to the given repositories whose stored profile is older than
# the max age, and not gone (a user stored by identity only, such as the owner of a fork in
# an organisation enforcing SAML SSO, has no profile GitHub serves: it is not asked for); each with the smallest of those
# repositories it is tied to, so that one batch asks for it. Users tied (by a list GitHub
# serves with inline profiles) to a repository re-listed in full this run get their profile
# from that listing, so they are left out.
STALE_PROFILES = """
SELECT DISTINCT ON (u.user_id) u.node_id, u.user_id, u.login, u.type, r.repo_id
FROM github_repo_user_relation r
JOIN github_user u ON u.user_id = r.user_id
WHERE r.repo_id = ANY(%(repo_ids)s::bigint[]) AND r.removed_at IS NULL
  AND u.gone_at IS NULL AND u.node_id IS NOT NULL
  AND u.profile_fetched_at <= now() - make_interval(secs => %(max_age_s)s)
  AND NOT EXISTS (
      SELECT 1 FROM github_repo_user_relation x
      WHERE x.user_id = u.user_id AND x.removed_at IS NULL AND x.relation = ANY(%(roles)s::text[])
        AND x.repo_id = ANY(%(relisted)s::bigint[]))
ORDER BY u.user_id, r.repo_id
"""


def stale_profiles(
    conn,
    repo_ids: list[int],
    max_age_hours: float,
    relisted: Sequence[int] = (),
    relations: Sequence[str] = (),
) -> list[tuple[str, int, str, str, int]]:
    """(node_id, user_id, login, type, repo_id) of every user tied to ``repo_ids`` whose
    stored profile is older than ``max_age_hours``; see STALE_PROFILES. ``relisted`` are the
    repositories re-listed in full this run, ``relations`` the run's relations."""
    if not repo_ids:
        return []
    try:
        with conn.cursor() as cur:
            cur.execute(
                STALE_PROFILES,
                {
                    "repo_ids": [int(i) for i in repo_ids],
                    "max_age_s": float(max_age_hours) * 3600,
                    "relisted": [int(i) for i in relisted],
                    "roles": [RELATION_ROLE[r] for r in relations if r in INLINE_PROFILES],
                },
            )
            rows = cur.fetchall()
        conn.commit()
    except Exception as exc:  # first run: no tables yet
        conn.rollback()
        if "does not exist" in str(exc):
            return []
        raise
    return [(r[0], int(r[1]), r[2], r[3], int(r[4])) for r in rows]


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
        for t in (
            "github_repository",
            "github_repo_request",
            "github_user",
            "github_repo_user",
            "github_repo_user_relation",
        ):
            cur.execute(f"SELECT count(*) FROM {t}")  # noqa: S608 - fixed table names
            out[t] = int(cur.fetchone()[0])
    conn.commit()
    return out
