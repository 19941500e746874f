from __future__ import annotations

import psycopg
import psycopg2
import psycopg2.errors
import pytest

from github_collector import loader

pytestmark = pytest.mark.integration
T0 = "2026-11-01T00:00:00+00:00"
T1 = "2026-11-02T00:00:00+00:00"

# PostgresHook hands out psycopg 3 connections on Airflow 3.x and psycopg2 ones on 2.x; the
# loader must behave the same with both, whichever Airflow is installed.
DRIVERS = {
    "psycopg3": (psycopg.connect, psycopg.errors.ForeignKeyViolation),
    "psycopg2": (psycopg2.connect, psycopg2.errors.ForeignKeyViolation),
}


@pytest.fixture(params=sorted(DRIVERS))
def driver(request):
    return DRIVERS[request.param]


@pytest.fixture()
def conn(pg_dsn, driver):
    c = driver[0](pg_dsn)
    try:
        loader.ensure_schema(c)
        yield c
        c.rollback()
        with c.cursor() as cur:
            cur.execute(
                "TRUNCATE github_repo_user, github_user, github_repository, github_repo_request, github_collect_run"
            )
        c.commit()
    finally:
        c.close()


def user(uid, login, **kw):
    base = dict.fromkeys(("name", "company", "blog", "location", "email", "bio", "twitter_username"))
    base.update(
        user_id=uid,
        node_id=f"U_{uid}",
        login=login,
        type="User",
        public_repos=1,
        followers=2,
        following=3,
        created_at="2020-01-01T00:00:00Z",
        updated_at="2024-01-01T00:00:00Z",
        profile_complete=True,
        email_known=True,
    )
    base.update(kw)
    return base


def repo(rid, name, status="ok", unavailable=()):
    return {
        "requested": name,
        "repo_id": rid,
        "full_name": name,
        "status": status,
        "detail": None,
        "unavailable_relations": list(unavailable),
        "relation_status": {},
        "stargazer_count": 5,
        "fork_count": 1,
        "watcher_count": 2,
    }


def rows(conn, sql, *args):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        out = cur.fetchall()
    conn.commit()
    return out


def test_schema_is_idempotent(conn):
    loader.ensure_schema(conn)
    loader.ensure_schema(conn)
    assert rows(conn, "SELECT version FROM github_schema_version") == [(loader.SCHEMA_VERSION,)]


def test_upserts_are_idempotent_and_merge_relations(conn):
    loader.apply_chunk(conn, "repos", [repo(1, "o/r", unavailable=["stargazers"])], T0)
    loader.apply_chunk(conn, "users", [user(10, "zoë", name="Zoë 李 🚀", bio='line1\nline2, "quoted"')], T0)
    links = [
        {"repo_id": 1, "user_id": 10, "relation": "contributor", "contributions": 7},
        {"repo_id": 1, "user_id": 10, "relation": "forker", "forked_at": "2021-01-01T00:00:00Z"},
    ]
    loader.apply_chunk(conn, "links", [dict(x) for x in links], T0)
    # The same chunks again, and one relation again in a later chunk: nothing duplicates.
    loader.apply_chunk(conn, "links", [dict(x) for x in links], T1)
    loader.apply_chunk(conn, "links", [{"repo_id": 1, "user_id": 10, "relation": "watcher"}], T1)
    loader.apply_chunk(conn, "users", [user(10, "zoë", name="Zoë 李 🚀", bio='line1\nline2, "quoted"')], T1)
    assert rows(
        conn, "SELECT relations, contributions, first_seen_at < last_seen_at FROM github_repo_user"
    ) == [(["contributor", "forker", "watcher"], 7, True)]
    assert rows(conn, "SELECT name, bio FROM github_user") == [("Zoë 李 🚀", 'line1\nline2, "quoted"')]
    assert rows(conn, "SELECT unavailable_relations FROM github_repository") == [(["stargazers"],)]
    assert loader.table_counts(conn)["github_repo_user"] == 1


def test_list_item_never_erases_a_profile_and_unknown_email_keeps_known(conn):
    loader.apply_chunk(conn, "users", [user(10, "ann", name="Ann", email="ann@example.com")], T0)
    partial = user(10, "ann", profile_complete=False, email_known=False, name=None, followers=None)
    loader.apply_chunk(conn, "users", [partial], T1)
    no_scope = user(10, "ann", name="Ann B", email=None, email_known=False)
    loader.apply_chunk(conn, "users", [no_scope], T1)
    assert rows(conn, "SELECT name, email, followers FROM github_user") == [("Ann B", "ann@example.com", 2)]
    # A profile read with the scope that shows no email does clear it.
    loader.apply_chunk(conn, "users", [user(10, "ann", name="Ann B", email=None)], T1)
    assert rows(conn, "SELECT email FROM github_user") == [(None,)]


def test_renamed_repo_updates_name_on_same_id(conn):
    loader.apply_chunk(conn, "repos", [repo(1, "o/old")], T0)
    moved = repo(1, "o/new", status="moved") | {"requested": "o/old"}
    loader.apply_chunk(conn, "repos", [moved], T1)
    assert rows(conn, "SELECT repo_id, full_name, status FROM github_repository") == [(1, "o/new", "moved")]
    assert rows(conn, "SELECT requested_name, repo_id FROM github_repo_request") == [("o/old", 1)]


def test_unresolved_repo_is_recorded_by_name_only(conn):
    gone = repo(None, "o/missing", status="not_found") | {"detail": "HTTP 404"}
    loader.apply_chunk(conn, "repos", [gone], T0)
    assert rows(conn, "SELECT count(*) FROM github_repository") == [(0,)]
    assert rows(conn, "SELECT status, detail FROM github_repo_request") == [("not_found", "HTTP 404")]


def test_fresh_profiles(conn):
    loader.apply_chunk(conn, "users", [user(1, "a")], "2000-01-01T00:00:00+00:00")
    loader.apply_chunk(conn, "users", [user(2, "b")], T1)
    loader.apply_chunk(conn, "users", [user(3, "c", profile_complete=False)], T1)
    assert loader.fresh_profiles(conn, [1, 2, 3, 4], max_age_hours=24 * 365 * 10) == {2}


def test_chunk_is_atomic(conn, driver):
    loader.apply_chunk(conn, "repos", [repo(1, "o/r")], T0)
    bad_link = [{"repo_id": 1, "user_id": 999, "relation": "contributor"}]  # no such user
    with pytest.raises(driver[1]):
        loader.apply_chunk(conn, "links", bad_link, T0)
    conn.rollback()
    assert rows(conn, "SELECT count(*) FROM github_repo_user") == [(0,)]


def test_previous_state_and_run_record_read_back(conn):
    assert loader.previous_state(conn, ["o/r", "o/missing"]) == {}
    state = {"forkers": {"count": 3, "complete": True}}
    loader.apply_chunk(conn, "repos", [repo(1, "o/r") | {"relation_state": state}], T0)
    gone = repo(None, "o/missing", status="not_found")
    loader.apply_chunk(conn, "repos", [gone], T0)
    assert loader.previous_state(conn, ["o/r", "o/missing", "o/other"]) == {
        "o/r": {"status": "ok", "relation_state": state},
        "o/missing": {"status": "not_found", "relation_state": {}},
    }
    import datetime as dt

    when = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    loader.record_run(conn, "k1", "d", "r", when, "partial", {"failed_batches": [2]})
    loader.record_run(conn, "k1", "d", "r", when, "complete", {"failed_batches": []})
    assert rows(conn, "SELECT status, counts, logical_date = %s FROM github_collect_run", when) == [
        ("complete", {"failed_batches": []}, True)
    ]
