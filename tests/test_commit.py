"""The commit task (run_tasks.commit_run) against the real Redis and Postgres, in this process:
two runs committing overlapping rows at once, and Redis losing a run's staging mid-commit."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import psycopg
import pytest
from fault_harness import set_connections

from github_collector import run_tasks
from github_collector.collector import Step
from github_collector.records import USER_FIELDS
from github_collector.staging import Staging, run_namespace

pytestmark = pytest.mark.integration
DAG_ID = "github_repo_users"
REPOS = 5


@pytest.fixture()
def target(pg_dsn, pg_database, key_prefix, monkeypatch):
    """A database of its own, and the connections commit_run resolves, as Airflow would."""
    db = f"{pg_database}_commit"
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{db}"')
    set_connections(
        monkeypatch, github_url="http://127.0.0.1:9", tokens=["unused"], pg_db=db, prefix=key_prefix
    )
    yield f"host=127.0.0.1 port=5432 user=postgres dbname={db}"
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def profile(uid: int) -> dict:
    return {
        "user_id": uid,
        "node_id": f"U_{uid}",
        "login": f"user-{uid}",
        "type": "User",
        "name": f"Zoë {uid}",
        "company": None,
        "blog": None,
        "location": "São Paulo\nBR",
        "email": None,
        "bio": 'says "hi"\\',
        "twitter_username": None,
        "public_repos": uid % 7,
        "followers": uid % 11,
        "following": uid % 13,
        "created_at": "2020-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
        "profile_complete": True,
        "email_known": True,
    }


def repo(i: int) -> dict:
    return {
        "requested": f"o/r{i}",
        "repo_id": 100 + i,
        "full_name": f"o/r{i}",
        "status": "ok",
        "detail": None,
        "unavailable_relations": [],
        "relation_status": {},
        "relation_state": {},
        "stargazer_count": 1,
        "fork_count": 1,
        "watcher_count": 1,
    }


def stage(
    redis_client,
    prefix: str,
    run_id: str,
    users: list[dict],
    links: list[dict],
    repos: list[dict] | None = None,
) -> Staging:
    staging = Staging(redis_client, run_namespace(prefix, DAG_ID, run_id))
    staging.save_plan(
        {"repositories": [], "relations": [], "batch_size": 1, "full_refresh": False, "batches": [["o/r"]]}
    )
    staging.set_outcome(0, "done")
    staging.write_step(0, Step(state={}, repos=[repo(i) for i in range(REPOS)] if repos is None else repos))
    for i in range(0, len(users), 250):
        staging.write_step(0, Step(state={}, users=users[i : i + 250]))
    for i in range(0, len(links), 250):
        staging.write_step(0, Step(state={}, links=links[i : i + 250]))
    return staging


# Every profile field, timestamps in the staged spelling.
USERS_SQL = "SELECT {} FROM github_user ORDER BY user_id".format(  # noqa: S608 - fixed names
    ", ".join(
        f"""to_char({f} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')""" if f.endswith("_at") else f
        for f in USER_FIELDS
    )
)


def query(dsn: str, sql: str) -> list[tuple]:
    with psycopg.connect(dsn) as c:
        return c.execute(sql).fetchall()


# -- two runs committing overlapping rows at the same time -----------------------------------
def run_a(uids: range) -> list[dict]:
    out = []
    for u in uids:
        out.append(
            {
                "repo_id": 100 + u % REPOS,
                "user_id": u,
                "relation": "stargazer",
                "starred_at": "2024-01-02T03:04:05Z",
            }
        )
        out.append(
            {
                "repo_id": 100 + (u + 1) % REPOS,
                "user_id": u,
                "relation": "forker",
                "forked_at": "2023-01-02T03:04:05Z",
            }
        )
    return out


def run_b(uids: range) -> list[dict]:
    out = []
    for u in uids:
        out.append(
            {"repo_id": 100 + u % REPOS, "user_id": u, "relation": "contributor", "contributions": u % 50 + 1}
        )
        out.append({"repo_id": 100 + (u + 2) % REPOS, "user_id": u, "relation": "watcher"})
    return out


def expected_pairs(links: list[dict]) -> dict[tuple[int, int], tuple]:
    pairs: dict[tuple[int, int], dict] = {}
    for lk in links:
        p = pairs.setdefault(
            (lk["repo_id"], lk["user_id"]), {"relations": set(), "c": None, "s": None, "f": None}
        )
        p["relations"].add(lk["relation"])
        p["c"] = lk.get("contributions", p["c"])
        p["s"] = lk.get("starred_at", p["s"])
        p["f"] = lk.get("forked_at", p["f"])
    return {k: (sorted(v["relations"]), v["c"], v["s"], v["f"]) for k, v in pairs.items()}


def commit(start: threading.Barrier, results: dict, run_id: str, chunk: int) -> None:
    start.wait()  # both commits begin together
    try:
        results[run_id] = run_tasks.commit_run(DAG_ID, run_id, chunk=chunk)
    except BaseException as exc:
        results[run_id] = exc


def test_two_runs_commit_overlapping_rows_at_once(target, redis_client, key_prefix):
    dsn = target
    a_users, b_users = range(1, 1201), range(301, 1501)  # 900 users in both runs
    links_a, links_b = run_a(a_users), run_b(b_users)
    want_pairs = expected_pairs(links_a + links_b)
    want_users = [tuple(profile(u)[f] for f in USER_FIELDS) for u in range(1, 1501)]
    retries = 0
    for round_no in range(12):
        if round_no:
            with psycopg.connect(dsn) as c:
                c.execute(
                    "TRUNCATE github_repo_user_relation, github_user, github_repository, github_repo_request"
                )
        runs = {
            f"a-{uuid.uuid4().hex[:6]}": ([profile(u) for u in a_users], links_a, 150 + 50 * (round_no % 3)),
            f"b-{uuid.uuid4().hex[:6]}": ([profile(u) for u in reversed(b_users)], links_b, 220),
        }
        for run_id, (users, links, _chunk) in runs.items():
            stage(redis_client, key_prefix, run_id, users, links)
        start = threading.Barrier(len(runs))
        results: dict[str, object] = {}
        threads = [
            threading.Thread(target=commit, args=(start, results, r, ch)) for r, (_u, _l, ch) in runs.items()
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        errors = {r: v for r, v in results.items() if isinstance(v, BaseException)}
        assert not errors, f"round {round_no}: {errors}"
        assert len(results) == 2
        retries += sum(v["retries"] for v in results.values())

        assert query(dsn, "SELECT count(*) - count(DISTINCT (repo_id, user_id)) FROM github_repo_user") == [
            (0,)
        ]
        got = {
            (rid, uid): (
                rels,
                c,
                s and s.strftime("%Y-%m-%dT%H:%M:%SZ"),
                f and f.strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            for rid, uid, rels, c, s, f in query(
                dsn,
                "SELECT repo_id, user_id, relations, contributions, starred_at, forked_at FROM github_repo_user",
            )
        }
        assert got == want_pairs, f"round {round_no}"
        assert query(dsn, USERS_SQL) == want_users
        assert query(dsn, "SELECT count(*) FROM github_repo_user WHERE first_seen_at > last_seen_at") == [
            (0,)
        ]
        assert query(dsn, "SELECT count(*), count(DISTINCT repo_id) FROM github_repository") == [
            (REPOS, REPOS)
        ]
        statuses = query(dsn, "SELECT status, count(*) FROM github_collect_run GROUP BY status")
        assert statuses == [("complete", 2 * (round_no + 1))]
    print(f"deadlocks or serialization failures retried over 12 rounds: {retries}")


# -- Redis losing the run's staging during the commit -----------------------------------------
@pytest.mark.parametrize("how", ["flush", "sentinel"])
def test_staging_lost_mid_commit_is_recorded_lost_not_complete(
    target, redis_client, key_prefix, monkeypatch, how
):
    dsn = target
    run_id = f"lost-{how}"
    users = [profile(u) for u in range(1, 401)]
    links = run_a(range(1, 401))
    staging = stage(redis_client, key_prefix, run_id, users, links)
    real_delete = Staging.delete_fields
    flushed: list[str] = []
    once = threading.Lock()  # two commit workers delete at once: only the first one loses Redis

    def delete_then_lose(self, kind, fields):
        real_delete(self, kind, fields)
        with once:
            if kind == "users" and not flushed:  # right after the first chunk of users committed
                if how == "flush":  # what FLUSHDB does to this run
                    keys = list(redis_client.scan_iter(match=staging.ns + "*", count=1000))
                    redis_client.delete(*keys)
                else:
                    redis_client.delete(staging.key("lost_sentinel"))
                flushed.append(kind)

    monkeypatch.setattr(Staging, "delete_fields", delete_then_lose)
    from airflow.providers.common.compat.sdk import AirflowFailException

    with pytest.raises(AirflowFailException) as err:  # lost staging is not retried
        run_tasks.commit_run(DAG_ID, run_id, chunk=40)
    assert flushed == ["users"]
    [(status, counts)] = query(dsn, "SELECT status, counts FROM github_collect_run")
    assert status == "lost"
    committed, staged = counts["committed"], counts["staged"]
    assert staged == {"repos": REPOS, "users": 400, "links": 800}
    assert 40 <= committed["users"] <= 400
    if how == "flush":
        assert committed["users"] < 400
    assert committed["links"] == 0  # the loss is noticed before the next kind starts
    missing = {k: staged[k] - committed[k] for k in ("repos", "users", "links") if staged[k] > committed[k]}
    message = str(err.value)
    assert "vanished from Redis during the commit" in message
    assert "lost: " + ", ".join(f"{n:,} {k}" for k, n in missing.items()) in message
    assert f"committed: {REPOS} repos, {committed['users']} users, 0 links" in message
    assert query(dsn, "SELECT count(*) FROM github_user") == [(committed["users"],)]


# -- Redis evicting a staged hash before the commit -------------------------------------------
@pytest.mark.parametrize("key", ["users", "links"])
def test_a_staged_hash_evicted_before_the_commit_makes_the_run_lost(target, redis_client, key_prefix, key):
    from airflow.providers.common.compat.sdk import AirflowFailException

    staging = stage(
        redis_client, key_prefix, f"evicted-{key}", [profile(u) for u in range(1, 401)], run_a(range(1, 401))
    )
    redis_client.delete(staging.key(key))  # what volatile-lru may do to a key with a TTL
    with pytest.raises(AirflowFailException) as err:  # not retried: retrying cannot bring it back
        run_tasks.commit_run(DAG_ID, f"evicted-{key}", chunk=100)
    n = {"users": 400, "links": 800}[key]
    assert f"{key}: 0 of the {n} staged and uncommitted records are left ({n} missing)" in str(err.value)
    [(status, counts)] = query(target, "SELECT status, counts FROM github_collect_run")
    assert status == "lost" and counts["lost"] == str(err.value)
    # Nothing of a run known to be incomplete is committed (no link refused for a missing user either).
    assert query(
        target, "SELECT (SELECT count(*) FROM github_user), (SELECT count(*) FROM github_repo_user)"
    ) == [(0, 0)]


# -- a record Postgres refuses -----------------------------------------------------------------
def test_a_refused_record_is_dead_lettered_and_the_run_completes_saying_so(
    target, redis_client, key_prefix, product_log
):
    users = [profile(u) for u in range(1, 301)]
    users[9]["bio"] = "a NUL \u0000 staged as it came"  # written past the records' cleaning
    links = run_a(range(1, 301))
    staging = stage(redis_client, key_prefix, "refused", users, links)
    counts = run_tasks.commit_run(DAG_ID, "refused", chunk=100)  # the commit task succeeds
    # User 10, and its two links, which its absence leaves without their foreign key.
    assert counts["dead_letters"] == 3
    assert counts["committed"]["users"] == 299 and counts["committed"]["links"] == 598
    [(status,)] = query(target, "SELECT status FROM github_collect_run")
    assert status == "complete_with_dead_letters"
    assert query(target, "SELECT kind, field, sqlstate FROM github_dead_letter ORDER BY kind, field") == [
        ("links", "100:10:stargazer", "23503"),
        ("links", "101:10:forker", "23503"),
        ("users", "10", "22P05"),
    ]
    want = {k: v for k, v in expected_pairs(links).items() if k[1] != 10}
    assert {
        (r, u): (rels,)
        for r, u, rels in query(target, "SELECT repo_id, user_id, relations FROM github_repo_user")
    } == {k: (v[0],) for k, v in want.items()}
    assert query(target, "SELECT count(*) FROM github_user") == [(299,)]
    assert "are in github_dead_letter" in product_log.text
    assert not list(redis_client.scan_iter(match=staging.ns + "*"))  # done: the staging is dropped


# -- relations: first seen, last seen, removed, back -------------------------------------------
def star(uid: int) -> dict:
    return {
        "repo_id": 100,
        "user_id": uid,
        "relation": "stargazer",
        "starred_at": f"2024-01-0{uid}T00:00:00Z",
    }


def commit_listing(
    redis_client, prefix: str, run_id: str, links: list[dict], listed: list[str]
) -> dt.datetime | None:
    """Stage and commit one run over repository 100, whose record says which relations it
    listed in full; return the time the run stamped its rows with."""
    uids = sorted({lk["user_id"] for lk in links})
    stage(
        redis_client,
        prefix,
        run_id,
        [profile(u) for u in uids],
        links,
        [repo(0) | {"listed_complete": listed}],
    )
    stamp = run_tasks.commit_run(DAG_ID, run_id).get("commit_time")
    return dt.datetime.fromisoformat(stamp) if stamp else None


def relation(dsn: str, uid: int, rel: str) -> tuple:
    with psycopg.connect(dsn) as c:
        [row] = c.execute(
            "SELECT first_seen_at, last_seen_at, removed_at FROM github_repo_user_relation"
            " WHERE repo_id = 100 AND user_id = %s AND relation = %s",
            (uid, rel),
        ).fetchall()
    return row


def pairs(dsn: str) -> dict[int, list[str]]:
    return dict(query(dsn, "SELECT user_id, relations FROM github_repo_user WHERE repo_id = 100"))


def test_a_complete_listing_removes_who_left_and_a_return_clears_it(target, redis_client, key_prefix):
    dsn = target
    contributor = {"repo_id": 100, "user_id": 1, "relation": "contributor", "contributions": 5}
    fork = {"repo_id": 100, "user_id": 3, "relation": "forker", "forked_at": "2023-01-01T00:00:00Z"}
    t1 = commit_listing(
        redis_client,
        key_prefix,
        "r1",
        [star(1), star(2), star(3), fork, contributor],
        ["contributors", "stargazers"],
    )
    assert pairs(dsn) == {1: ["contributor", "stargazer"], 2: ["stargazer"], 3: ["forker", "stargazer"]}

    # Run 2 lists stargazers and contributors in full: 3 unstarred, and nobody contributes now.
    # Forkers were not listed, so 3 stays a forker.
    t2 = commit_listing(redis_client, key_prefix, "r2", [star(1), star(2)], ["contributors", "stargazers"])
    assert pairs(dsn) == {1: ["stargazer"], 2: ["stargazer"], 3: ["forker"]}
    assert relation(dsn, 3, "stargazer") == (t1, t1, t2)
    assert relation(dsn, 1, "contributor") == (t1, t1, t2)
    assert query(dsn, "SELECT contributions FROM github_repo_user WHERE user_id = 1") == [(None,)]

    # Run 3 pages stargazers newest first only (incremental): it saw 1, and proves nothing of 2.
    t3 = commit_listing(redis_client, key_prefix, "r3", [star(1)], [])
    assert relation(dsn, 1, "stargazer") == (t1, t3, None)
    assert relation(dsn, 2, "stargazer") == (t1, t2, None)  # last seen when it truly was

    # Run 4 lists everyone again, 3 included: back, first seen when it was first seen.
    t4 = commit_listing(redis_client, key_prefix, "r4", [star(1), star(2), star(3)], ["stargazers"])
    assert relation(dsn, 3, "stargazer") == (t1, t4, None)
    assert pairs(dsn) == {1: ["stargazer"], 2: ["stargazer"], 3: ["forker", "stargazer"]}
    assert t1 < t2 < t3 < t4


def test_a_dead_lettered_link_is_not_taken_for_a_departure(target, redis_client, key_prefix):
    dsn = target
    t1 = commit_listing(redis_client, key_prefix, "d1", [star(1), star(2)], ["stargazers"])
    refused = star(2) | {"starred_at": "294277-01-01T00:00:00Z"}  # past timestamptz's range
    commit_listing(redis_client, key_prefix, "d2", [star(1), refused], ["stargazers"])
    assert relation(dsn, 2, "stargazer") == (t1, t1, None)
    assert query(dsn, "SELECT field, sqlstate FROM github_dead_letter") == [("100:2:stargazer", "22008")]
    assert pairs(dsn) == {1: ["stargazer"], 2: ["stargazer"]}
