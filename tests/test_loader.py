from __future__ import annotations

import json
import logging
import random
import threading

import psycopg
import pytest
from support import wait_until

from github_collector import loader

pytestmark = pytest.mark.integration
T0 = "2026-11-01T00:00:00+00:00"
T1 = "2026-11-02T00:00:00+00:00"


try:
    import psycopg2
    import psycopg2.errors
except ImportError:  # an environment without the Airflow 2.x driver
    psycopg2 = None

NO_PSYCOPG2 = "psycopg2 is not installed: the Airflow 2.x driver path runs only in an environment that has it"
DRIVERS = [
    pytest.param("psycopg", id="psycopg3"),
    pytest.param("psycopg2", id="psycopg2", marks=pytest.mark.skipif(psycopg2 is None, reason=NO_PSYCOPG2)),
]


def connect(driver: str, dsn: str):
    return psycopg2.connect(dsn) if driver == "psycopg2" else psycopg.connect(dsn)


def errors_of(c):
    """The driver's module of SQLSTATE exception classes."""
    return psycopg2.errors if type(c).__module__.startswith("psycopg2") else psycopg.errors


# PostgresHook hands out psycopg 3 connections on Airflow 3.x and psycopg2 ones on 2.x; every
# loader test runs with both, whichever Airflow is installed.
@pytest.fixture(params=DRIVERS)
def conn(pg_dsn, request):
    c = connect(request.param, pg_dsn)
    try:
        loader.ensure_schema(c)
        yield c
        c.rollback()
        with c.cursor() as cur:
            cur.execute(
                "TRUNCATE github_repo_user_relation, github_user, github_repository, github_repo_request,"
                " github_collect_run, github_dead_letter"
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


def test_a_gone_account_is_marked_kept_by_list_items_and_cleared_by_a_profile(conn):
    from github_collector.records import user_from_identity

    item = user(5, "eve", profile_complete=False, email_known=False, name=None)
    gone = user_from_identity({"databaseId": 5, "node_id": "U_5", "login": "eve", "type": "User"}, gone=True)
    loader.apply_chunk(conn, "users", [item, gone], T0)
    assert rows(conn, "SELECT login, gone_at IS NOT NULL, profile_fetched_at FROM github_user") == [
        ("eve", True, None)
    ]
    # Gone accounts are not asked for again, however old their record.
    assert loader.fresh_profiles(conn, [5], max_age_hours=0.001) == {5}
    loader.apply_chunk(conn, "users", [item], T1)  # still listed: still gone
    assert rows(conn, "SELECT gone_at IS NOT NULL FROM github_user") == [(True,)]
    loader.apply_chunk(conn, "users", [user(5, "eve", name="Eve")], T1)  # served again
    assert rows(conn, "SELECT name, gone_at FROM github_user") == [("Eve", None)]


def test_chunk_is_atomic(conn):
    loader.apply_chunk(conn, "repos", [repo(1, "o/r")], T0)
    bad_link = [{"repo_id": 1, "user_id": 999, "relation": "contributor"}]  # no such user
    with pytest.raises(errors_of(conn).ForeignKeyViolation):
        loader.apply_chunk(conn, "links", bad_link, T0)
    conn.rollback()
    assert rows(conn, "SELECT count(*) FROM github_repo_user") == [(0,)]


def test_previous_state_and_run_record_read_back(conn):
    assert loader.previous_state(conn, ["o/r", "o/missing"]) == {}
    state = {"forkers": {"count": 3, "complete": True}}
    loader.apply_chunk(conn, "repos", [repo(1, "o/r") | {"relation_state": state}], T0)
    # the relation state, which incremental runs trust, is only written by the commit's last pass
    assert loader.previous_state(conn, ["o/r"]) == {
        "o/r": {"status": "ok", "repo_id": 1, "relation_state": {}}
    }
    loader.apply_chunk(conn, "repo_state", [repo(1, "o/r") | {"relation_state": state}], T0)
    gone = repo(None, "o/missing", status="not_found")
    loader.apply_chunk(conn, "repos", [gone], T0)
    assert loader.previous_state(conn, ["o/r", "o/missing", "o/other"]) == {
        "o/r": {"status": "ok", "repo_id": 1, "relation_state": state},
        "o/missing": {"status": "not_found", "repo_id": None, "relation_state": {}},
    }
    import datetime as dt

    when = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    loader.record_run(conn, "k1", "d", "r", when, "partial", {"failed_batches": [2]})
    loader.record_run(conn, "k1", "d", "r", when, "complete", {"failed_batches": []})
    assert rows(conn, "SELECT status, counts, logical_date = %s FROM github_collect_run", when) == [
        ("complete", {"failed_batches": []}, True)
    ]


# -- both drivers, raw staged bytes ------------------------------------------------------------

# Text that means something to COPY (backslash, tab, CR, LF, a lone \N, \.), to CSV (quotes,
# commas) and to JSON (escapes), in every spelling a staged value may have.
TRICKY = {
    1: {"name": "Zoë 李 🚀", "bio": 'tab\there, "quoted", comma, C:\\new\\table', "company": "Acme\nR&D\r\n"},
    2: {"name": "\\N", "bio": "\\.", "company": "back\\\\slash\\", "location": "São Paulo\t"},
    3: {"name": "Ünïcode 😀 \u2028 sep", "bio": "line1\nline2\\nnot-a-newline", "company": None},
    4: {"name": "plain", "bio": "", "company": "x" * 3000},
}


def tricky_values() -> list[bytes]:
    """The same kind of records as staging holds, as JSON bytes written in four different ways."""
    docs = [user(uid, f"login-{uid}", **fields) for uid, fields in TRICKY.items()]
    return [
        json.dumps(docs[0]).encode(),  # what staging writes: ASCII, \\u escapes
        json.dumps(docs[1], ensure_ascii=False).encode(),  # raw UTF-8
        json.dumps(docs[2], indent=2, ensure_ascii=False).encode(),  # raw newlines between tokens
        json.dumps(docs[3], separators=(",\t", ":\r\n ")).encode(),  # tabs and CRLF between tokens
    ]


def tricky_links() -> list[bytes]:
    return [
        json.dumps({"repo_id": 1, "user_id": uid, "relation": rel, "contributions": uid}).encode()
        for uid in TRICKY
        for rel in ("contributor", "watcher")
    ]


def tricky_repo() -> bytes:
    return json.dumps(repo(1, "o/r") | {"detail": 'HTTP 451\n"blocked"\t\\ reason'}).encode()


def check_tricky(conn) -> None:
    got = rows(conn, "SELECT user_id, name, bio, company, location FROM github_user ORDER BY user_id")
    assert got == [
        (uid, f.get("name"), f.get("bio"), f.get("company"), f.get("location")) for uid, f in TRICKY.items()
    ]
    assert rows(conn, "SELECT detail FROM github_repo_request") == [('HTTP 451\n"blocked"\t\\ reason',)]
    assert rows(conn, "SELECT user_id, relations FROM github_repo_user ORDER BY user_id") == [
        (uid, ["contributor", "watcher"]) for uid in TRICKY
    ]


def apply_tricky(c) -> None:
    loader.apply_chunk(c, "repos", [tricky_repo()], T0)
    loader.apply_chunk(c, "users", tricky_values(), T0)
    loader.apply_chunk(c, "links", tricky_links(), T0)


@pytest.mark.parametrize("driver", DRIVERS)
def test_same_raw_chunk_through_each_driver(conn, pg_dsn, driver):
    c = connect(driver, pg_dsn)
    try:
        assert type(c).__module__.split(".")[0] == driver
        apply_tricky(c)
        check_tricky(conn)
        before = rows(conn, "SELECT * FROM github_user ORDER BY user_id")
        apply_tricky(c)  # re-applying the same chunks changes nothing
        assert rows(conn, "SELECT * FROM github_user ORDER BY user_id") == before
        check_tricky(conn)
    finally:
        c.close()


def test_raw_chunk_through_the_driver_postgres_hook_uses(conn, pg_database, monkeypatch):
    """Whatever driver the installed Airflow's PostgresHook gives (psycopg 3 on 3.x, psycopg2 on 2.x)."""
    from airflow.providers.postgres.hooks import postgres as pg_hook

    monkeypatch.setenv("AIRFLOW_CONN_GHC_LOADER_TEST", f"postgresql://postgres@127.0.0.1:5432/{pg_database}")
    c = pg_hook.PostgresHook(postgres_conn_id="ghc_loader_test").get_conn()
    try:
        expected = "psycopg" if getattr(pg_hook, "USE_PSYCOPG3", False) else "psycopg2"
        assert type(c).__module__.split(".")[0] == expected
        apply_tricky(c)
        check_tricky(conn)
    finally:
        c.close()


def test_copy_text_escapes_every_value_into_one_line():
    values = [b'{"a": "x\\\\y"}', b'{\n"a":\t1\r}', b"[]"]
    assert loader.copy_text(values) == b'{"a": "x\\\\\\\\y"}\n{\\n"a":\\t1\\r}\n[]\n'
    assert loader.copy_text([b'{"a": "\\t"}']) == b'{"a": "\\\\t"}\n'
    assert loader.copy_text([]) == b""


# -- deadlocks and serialization failures are retried -----------------------------------------
def start_blocked(conn, writer_conn, write) -> tuple[threading.Thread, list[BaseException]]:
    """Run ``write`` (on ``writer_conn``) in a thread, and return once it waits for a row lock."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            write()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    pid = writer_conn.info.backend_pid
    waiting = "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s"
    assert wait_until(lambda: rows(conn, waiting, pid) == [("Lock",)]), (
        "the writer never waited for a row lock"
    )
    return thread, errors


def test_deadlock_is_rolled_back_and_applied_again(conn, pg_dsn, caplog):
    loader.apply_chunk(conn, "users", [user(1, "a"), user(2, "b")], T0)
    writer_conn, blocker = psycopg.connect(pg_dsn), psycopg.connect(pg_dsn)
    try:
        # The writer's deadlock check (deadlock_timeout, 1 s by default) runs first: it is the victim.
        blocker.execute("SET deadlock_timeout = '30s'")
        blocker.execute("UPDATE github_user SET login = 'blocker' WHERE user_id = 2")
        writer = loader.ChunkWriter(writer_conn, backoff_s=0.01)
        caplog.set_level(logging.WARNING, logger="github_collector.loader")
        thread, errors = start_blocked(
            conn,
            writer_conn,
            lambda: writer.apply("users", loader.encode_docs([user(1, "a2"), user(2, "b2")]), T1),
        )
        blocker.execute("UPDATE github_user SET login = 'blocker' WHERE user_id = 1")  # closes the cycle
        blocker.commit()
        thread.join(timeout=60)
        assert not thread.is_alive() and errors == []
        assert writer.retries == 1
        assert "deadlock_detected (40P01), attempt 1 of" in caplog.text
        assert rows(conn, "SELECT user_id, login FROM github_user ORDER BY user_id") == [(1, "a2"), (2, "b2")]
    finally:
        writer_conn.close()
        blocker.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_serialization_failure_is_rolled_back_and_applied_again(conn, pg_dsn, monkeypatch, driver):
    loader.apply_chunk(conn, "users", [user(1, "a")], T0)
    writer_conn = connect(driver, pg_dsn)
    other = psycopg.connect(pg_dsn, autocommit=True)
    try:
        with writer_conn.cursor() as cur:
            cur.execute("SET default_transaction_isolation = 'repeatable read'")
        writer_conn.commit()
        real_copy = loader.copy_rows
        attempts: list[int] = []

        def copy_then_concurrent_update(cur, sql, data):
            real_copy(cur, sql, data)  # the chunk's snapshot is taken by now
            if not attempts:
                other.execute("UPDATE github_user SET login = 'other' WHERE user_id = 1")
            attempts.append(1)

        monkeypatch.setattr(loader, "copy_rows", copy_then_concurrent_update)
        writer = loader.ChunkWriter(writer_conn, backoff_s=0.01)
        writer.apply("users", loader.encode_docs([user(1, "mine")]), T1)
        assert (len(attempts), writer.retries) == (2, 1)
        assert rows(conn, "SELECT login FROM github_user") == [("mine",)]
    finally:
        writer_conn.close()
        other.close()


def test_other_errors_are_not_retried(conn):
    writer = loader.ChunkWriter(conn, backoff_s=0.01)
    with pytest.raises(errors_of(conn).InvalidTextRepresentation):
        writer.apply("users", [b'{"user_id": "not a number"}'], T0)
    assert writer.retries == 0
    writer.apply("users", loader.encode_docs([user(1, "a")]), T0)  # the connection is usable again
    assert rows(conn, "SELECT login FROM github_user") == [("a",)]


# -- lock order -----------------------------------------------------------------------------
LOCK_ORDER = {
    # kind: (table, key columns, staged records keyed 1..n, the key another transaction holds)
    "users": ("github_user", "user_id", lambda i: user(i, f"u{i}"), (50,)),
    "repos": ("github_repository", "repo_id", lambda i: repo(i, f"o/r{i}"), (30,)),
    "links": (
        "github_repo_user_relation",
        "repo_id, user_id, relation",
        lambda i: {"repo_id": 1 + i % 2, "user_id": i, "relation": "watcher"},
        (2, 41, "watcher"),
    ),
}


@pytest.mark.parametrize("kind", list(LOCK_ORDER))
def test_upserts_lock_rows_in_key_order(conn, pg_dsn, kind):
    """A chunk staged in any order locks its rows in key order: while it waits for one row, every
    row before it is locked and none after it, so two overlapping commits cannot deadlock."""
    table, key, make, held = LOCK_ORDER[kind]
    loader.apply_chunk(conn, "repos", [repo(1, "o/r1"), repo(2, "o/r2")], T0)
    loader.apply_chunk(conn, "users", [user(i, f"u{i}") for i in range(1, 101)], T0)
    records = [make(i) for i in range(1, 101)]
    loader.apply_chunk(conn, kind, records, T0)
    random.Random(7).shuffle(records)
    holder, writer_conn, prober = (psycopg.connect(pg_dsn) for _ in range(3))
    try:
        where = " AND ".join(f"{k.strip()} = %s" for k in key.split(","))
        holder.execute(f"SELECT 1 FROM {table} WHERE {where} FOR NO KEY UPDATE", held)  # noqa: S608
        thread, errors = start_blocked(
            conn, writer_conn, lambda: loader.apply_chunk(writer_conn, kind, records, T1)
        )
        free = prober.execute(
            f"SELECT {key} FROM {table} ORDER BY {key} FOR NO KEY UPDATE SKIP LOCKED"  # noqa: S608
        ).fetchall()
        prober.rollback()
        every = rows(conn, f"SELECT {key} FROM {table} ORDER BY {key}")  # noqa: S608
        assert free == [k for k in every if k > held], "rows were locked out of key order"
        holder.rollback()
        thread.join(timeout=30)
        assert errors == []
    finally:
        for c in (holder, writer_conn, prober):
            c.close()


# -- records Postgres refuses go to the dead-letter table; the rest of the chunk commits -------
REFUSED = {  # user_id: (what the staged record holds, the SQLSTATE Postgres answers)
    7: ({"name": "a\u0000b"}, "22P05"),  # NUL: no text or jsonb holds it
    19: ({"bio": "\ud800"}, "22P02"),  # a lone surrogate: jsonb refuses it
    33: ({"created_at": "294277-01-01T00:00:00Z"}, "22008"),  # past timestamptz's range
}


def test_refused_records_are_dead_lettered_and_the_rest_of_the_chunk_commits(conn):
    values = loader.encode_docs(user(uid, f"u{uid}", **REFUSED.get(uid, ({}, ""))[0]) for uid in range(1, 41))
    fields = [str(uid).encode() for uid in range(1, 41)]
    writer = loader.ChunkWriter(conn, run_key="run-a")
    assert writer.apply("users", values, T0, fields) == len(REFUSED)
    assert writer.splits > 0
    assert rows(conn, "SELECT user_id FROM github_user ORDER BY 1") == [
        (uid,) for uid in range(1, 41) if uid not in REFUSED
    ]
    dead = "SELECT field, payload, sqlstate, error, commit_time = %s FROM github_dead_letter WHERE kind = 'users'"
    got = {f: (bytes(p), code, err, same) for f, p, code, err, same in rows(conn, dead, T0)}
    assert {int(f): code for f, (_, code, _, _) in got.items()} == {u: c for u, (_, c) in REFUSED.items()}
    for f, (payload, _, err, same) in got.items():
        assert payload == values[int(f) - 1] and err and same  # the staged bytes, as they were
    # A retried commit applies the same chunk again: nothing is added twice.
    assert writer.apply("users", values, T0, fields) == len(REFUSED)
    assert rows(conn, "SELECT count(*) FROM github_dead_letter") == [(len(REFUSED),)]
    assert loader.dead_letter_count(conn, "run-a", T0) == len(REFUSED)

    # Links to a refused user break the foreign key: they are dead-lettered too, the others commit.
    loader.apply_chunk(conn, "repos", [repo(1, "o/r")], T0)
    links = [{"repo_id": 1, "user_id": uid, "relation": "stargazer"} for uid in (6, 7, 8)]
    got = writer.apply(
        "links", loader.encode_docs(links), T0, [f"1:{u}:stargazer".encode() for u in (6, 7, 8)]
    )
    assert got == 1
    assert rows(conn, "SELECT user_id FROM github_repo_user ORDER BY 1") == [(6,), (8,)]
    assert rows(conn, "SELECT field, sqlstate FROM github_dead_letter WHERE kind = 'links'") == [
        ("1:7:stargazer", "23503")
    ]


def test_without_a_run_a_refused_chunk_still_fails_whole(conn):
    values = loader.encode_docs([user(1, "a"), user(7, "b", name="a\u0000b")])
    with pytest.raises(errors_of(conn).UntranslatableCharacter):
        loader.ChunkWriter(conn).apply("users", values, T0, [b"1", b"7"])
    assert rows(conn, "SELECT count(*) FROM github_user") == [(0,)]
