"""An install of schema 1 (github_repo_user a table of pairs, tests/schema_v1.sql) migrates to
one row per relation with its lifecycle, keeping every pair, under the advisory lock, once."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import psycopg
import pytest

from github_collector import loader

pytestmark = pytest.mark.integration
SCHEMA_V1 = (Path(__file__).parent / "schema_v1.sql").read_text()
T0, T1, T2 = "2025-01-01T00:00:00+00:00", "2025-06-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00"

try:
    import psycopg2
except ImportError:  # an environment without the Airflow 2.x driver
    psycopg2 = None

# (repo_id, user_id, relations, contributions, starred_at, forked_at, first_seen_at, last_seen_at)
PAIRS = [
    (1, 10, ["contributor", "forker", "stargazer", "watcher"], 42, T0, T1, T0, T2),
    (1, 11, ["stargazer"], None, T1, None, T1, T1),
    (1, 12, ["contributor"], 3, None, None, T0, T0),
    (2, 10, ["forker", "watcher"], None, None, T2, T1, T2),
    (2, 12, ["watcher"], None, None, None, T2, T2),
]
PAIRS_SQL = (
    "SELECT repo_id, user_id, relations, contributions, starred_at, forked_at, first_seen_at, last_seen_at"
    " FROM github_repo_user ORDER BY repo_id, user_id"
)


def v1_install(dsn: str) -> list[tuple]:
    """Schema 1 with data, as a daily run of the previous version left it; its pairs read back."""
    with psycopg.connect(dsn) as c:
        c.execute(SCHEMA_V1)
        for rid in (1, 2):
            c.execute(
                "INSERT INTO github_repository (repo_id, full_name, status, fetched_at) VALUES (%s, %s, 'ok', %s)",
                (rid, f"o/r{rid}", T2),
            )
        for uid in (10, 11, 12):
            c.execute(
                "INSERT INTO github_user (user_id, login, fetched_at) VALUES (%s, %s, %s)",
                (uid, f"u{uid}", T2),
            )
        for pair in PAIRS:
            c.execute("INSERT INTO github_repo_user VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", pair)
        return c.execute(PAIRS_SQL).fetchall()


def test_schema_1_migrates_once_keeping_every_pair(fresh_db):
    _, dsn = fresh_db
    before = v1_install(dsn)
    assert len(before) == len(PAIRS)
    # Two commits start at once, one per driver where both are installed: one migrates, the
    # other waits on the advisory lock and finds it done.
    conns = [psycopg.connect(dsn), psycopg2.connect(dsn) if psycopg2 else psycopg.connect(dsn)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(conns))

    def migrate(c) -> None:
        start.wait()
        try:
            loader.ensure_schema(c)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for c in conns:
        c.close()
    assert errors == []
    with psycopg.connect(dsn) as c:
        loader.ensure_schema(c)  # and again: nothing changes
        assert c.execute(PAIRS_SQL).fetchall() == before  # github_repo_user reads as it did
        assert c.execute("SELECT relkind FROM pg_class WHERE relname = 'github_repo_user'").fetchall() == [
            ("v",)
        ]
        assert c.execute("SELECT version FROM github_schema_version ORDER BY 1").fetchall() == [
            (1,),
            (loader.SCHEMA_VERSION,),
        ]
        relations = c.execute(
            "SELECT repo_id, user_id, relation, contributions, starred_at IS NOT NULL, forked_at IS NOT NULL,"
            " removed_at FROM github_repo_user_relation ORDER BY 1, 2, 3"
        ).fetchall()
    # Each fact stays with the relation it belongs to.
    assert relations == [
        (1, 10, "contributor", 42, False, False, None),
        (1, 10, "forker", None, False, True, None),
        (1, 10, "stargazer", None, True, False, None),
        (1, 10, "watcher", None, False, False, None),
        (1, 11, "stargazer", None, True, False, None),
        (1, 12, "contributor", 3, False, False, None),
        (2, 10, "forker", None, False, True, None),
        (2, 10, "watcher", None, False, False, None),
        (2, 12, "watcher", None, False, False, None),
    ]


def test_a_migrated_install_takes_new_links(fresh_db):
    _, dsn = fresh_db
    v1_install(dsn)
    with psycopg.connect(dsn) as c:
        loader.ensure_schema(c)
        loader.apply_chunk(c, "links", [{"repo_id": 1, "user_id": 11, "relation": "watcher"}], T2)
        got = c.execute(
            "SELECT relations, starred_at, first_seen_at, last_seen_at FROM github_repo_user"
            " WHERE (repo_id, user_id) = (1, 11)"
        ).fetchall()
    assert got == [(["stargazer", "watcher"], *(dt.datetime.fromisoformat(t) for t in (T1, T1, T2)))]


def test_an_object_depending_on_the_old_table_stops_the_migration_and_keeps_schema_1(fresh_db):
    _, dsn = fresh_db
    before = v1_install(dsn)
    with psycopg.connect(dsn) as c:
        c.execute("CREATE VIEW my_stars AS SELECT repo_id, user_id FROM github_repo_user")
        c.commit()
        with pytest.raises(psycopg.errors.DependentObjectsStillExist, match="my_stars"):
            loader.ensure_schema(c)
        c.rollback()  # one transaction: nothing of the migration stays
        assert c.execute(PAIRS_SQL).fetchall() == before
        assert c.execute("SELECT to_regclass('github_repo_user_relation')").fetchone() == (None,)
        assert c.execute("SELECT relkind FROM pg_class WHERE relname = 'github_repo_user'").fetchall() == [
            ("r",)
        ]


SCHEMA_2_CHECK = "relation IN ('contributor', 'forker', 'stargazer', 'watcher')"


def test_schema_2_takes_the_author_relations_keeping_its_rows(fresh_db):
    """An install of schema 2 (the relation check of the first four relations only) gets the
    author roles, new columns and the item table; its rows stay as they were."""
    _, dsn = fresh_db
    v1_install(dsn)
    with psycopg.connect(dsn) as c:
        loader.ensure_schema(c)
        # Back to schema 2's shape: its inline check, none of schema 3's additions.
        c.execute(f"ALTER TABLE github_repo_user_relation DROP CONSTRAINT {loader.RELATION_CHECK}")
        c.execute(
            f"ALTER TABLE github_repo_user_relation ADD CONSTRAINT {loader.RELATION_CHECK} CHECK ({SCHEMA_2_CHECK})"
        )
        for col in ("authored_items", "first_authored_at", "last_authored_at"):
            c.execute(f"ALTER TABLE github_repo_user_relation DROP COLUMN {col}")
        c.execute("ALTER TABLE github_repository DROP COLUMN authorless_items")
        c.execute("DROP TABLE github_authored_item")
        c.commit()
        with pytest.raises(psycopg.errors.CheckViolation):
            loader.apply_chunk(c, "links", [{"repo_id": 1, "user_id": 11, "relation": "issue_author"}], T2)
        c.rollback()
        rows = "SELECT * FROM github_repo_user_relation ORDER BY 1, 2, 3"
        before = c.execute(rows).fetchall()
        loader.ensure_schema(c)
        after = c.execute(rows).fetchall()
        assert [r[:9] for r in after] == [r[:9] for r in before] and len(after) == len(before)
        loader.apply_chunk(c, "links", [{"repo_id": 1, "user_id": 11, "relation": "issue_author"}], T2)
        loader.apply_chunk(
            c,
            "links",
            [
                {
                    "repo_id": 1,
                    "relation": "issue_author",
                    "number": 7,
                    "created_at": T1,
                    "author_id": 11,
                    "author_type": "User",
                    "author_login": "u11",
                }
            ],
            T2,
        )
        loader.apply_chunk(
            c,
            "repo_state",
            [{"repo_id": 1, "relation_status": {"issue_authors": "ok"}, "relation_state": {}}],
            T2,
        )
        got = c.execute(
            "SELECT authored_items, first_authored_at, last_authored_at FROM github_repo_user_relation"
            " WHERE (repo_id, user_id, relation) = (1, 11, 'issue_author')"
        ).fetchall()
        assert got == [(1, dt.datetime.fromisoformat(T1), dt.datetime.fromisoformat(T1))]
        loader.ensure_schema(c)  # and again: the check is not replaced twice
        assert (
            c.execute(loader.FIND_RELATION_CHECK, (loader.RELATION_CHECK,))
            .fetchone()[0]
            .count("issue_author")
            == 1
        )
