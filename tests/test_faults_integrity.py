"""The commit against what Redis and GitHub can really do to a run's records.

- Redis evicts one staged key (users, links, repos, a batch's checkpoint) between the fetch
  and the commit, or during the commit: the run is recorded 'lost', saying what is missing,
  never 'complete', and a cleared run collects again, exactly.
- GitHub serves profiles holding NUL and a lone UTF-16 surrogate: they are stored cleaned, and
  the run completes.
- A staged record Postgres refuses whatever cleaning does (a timestamp out of range): it goes
  to the dead-letter table with its error, every other record is committed, and the run says
  so ('complete_with_dead_letters').
"""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from e2e_harness import duplicate_count, read_back
from fault_harness import ALL, InProcessRun, conn_env, failures
from support import diff_against_truth

from github_collector.staging import Staging, run_namespace
from github_emulator import DatasetSpec, EmulatorConfig, EmulatorServer, TokenConfig, build_dataset

pytestmark = pytest.mark.faults
TOKEN = "integrity-fault-token-3f81a2"
DAG_ID = "github_repo_users"
KEYS = {  # what is evicted: the staged hashes, and batch 0's checkpoint
    "users": lambda s: s.key("users"),
    "links": lambda s: s.key("links"),
    "repos": lambda s: s.key("repos"),
    "checkpoint": lambda s: s.key("batch", 0, "state"),
}
SAYS = {  # what the failure says is missing
    "users": "users: ",
    "links": "links: ",
    "repos": "repos: ",
    "checkpoint": "the checkpoint of 1 finished batch(es) is gone: 0",
}


@pytest.fixture(scope="module")
def dataset():
    return build_dataset(DatasetSpec(seed=47, n_repos=4, n_users=400, max_per_repo=150))


@pytest.fixture()
def emulator(dataset, fresh_db, key_prefix, monkeypatch):
    """The emulator, and the connections of a run against it and a database of the test's own."""
    cfg = EmulatorConfig(tokens=[TokenConfig(name="t", token=TOKEN, collaborator_repos=("*",))])
    with EmulatorServer(dataset, cfg) as srv:
        env = conn_env(github_url=srv.url, tokens=[TOKEN], pg_db=fresh_db[0], prefix=key_prefix)
        env["GITHUB_REPO_USERS_COMMIT_CHUNK"] = "50"  # many chunks, so a fault can fall inside a pass
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        yield srv


def fetched(names: list[str]) -> InProcessRun:
    """A run whose fetch slots are done: everything staged in Redis, nothing committed."""
    run = InProcessRun(f"integrity-{uuid.uuid4().hex[:6]}", slots=2)
    assert run.plan({"repositories": names, "batch_size": 2}).state == "success"
    for slot in range(2):
        out = run.collect(slot)
        assert out.state in ("success", "skipped"), repr(out.error)
    return run


def statuses(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as c:
        return [r[0] for r in c.execute("SELECT status FROM github_collect_run")]


def check_exact(dataset, dsn: str, truth: dict | None = None) -> None:
    truth = truth or dataset.truth(ALL, collaborator_repos=["*"])
    assert diff_against_truth(truth, *read_back(dsn)) == []
    assert duplicate_count(dsn) == 0


@pytest.mark.parametrize("when", ["before the commit", "during the commit"])
@pytest.mark.parametrize("key", list(KEYS))
def test_an_evicted_staging_key_is_never_committed_as_complete(
    key, when, dataset, emulator, redis_client, key_prefix, fresh_db, monkeypatch, figure
):
    names = dataset.repo_names()
    run = fetched(names)
    staging = Staging(redis_client, run_namespace(key_prefix, DAG_ID, run.run_id))
    evicted = KEYS[key](staging)
    assert redis_client.exists(evicted)
    real_delete = Staging.delete_fields
    if when == "before the commit":
        redis_client.delete(evicted)
    else:
        done: list[str] = []

        def delete_then_evict(self, kind, fields):  # right after the first chunk of users committed
            real_delete(self, kind, fields)
            if kind == "users" and not done:
                done.append(kind)
                redis_client.delete(evicted)

        monkeypatch.setattr(Staging, "delete_fields", delete_then_evict)
    commit = run.commit()
    monkeypatch.setattr(Staging, "delete_fields", real_delete)
    assert commit.state == "failed"
    assert type(commit.error).__name__ == "AirflowFailException"  # no retry: it cannot help
    message = str(commit.error)
    assert SAYS[key] in message and "clear the whole run" in message
    assert statuses(fresh_db[1]) == ["lost"]
    with psycopg.connect(fresh_db[1]) as c:
        links_committed = c.execute("SELECT count(*) FROM github_repo_user").fetchone()[0]
    assert links_committed == 0  # the loss is seen before the links pass

    # Clearing the whole run (plan included) collects again, exactly: the plan sees the
    # staging is incomplete and starts it over.
    again = InProcessRun(run.run_id, slots=2).run({"repositories": names, "batch_size": 2})
    assert again["commit"].state == "success", failures(again)
    check_exact(dataset, fresh_db[1])
    assert statuses(fresh_db[1]) == ["complete"]
    figure(
        f"redis evicted {key} {when}",
        recorded="lost",
        failure_names=key,
        links_committed=links_committed,
        after_clear="exact",
    )


NUL, LONE_SURROGATE = "\x00", "\ud83d"


def test_profiles_holding_nul_and_a_lone_surrogate_are_stored_cleaned(
    dataset, emulator, fresh_db, monkeypatch, figure
):
    import github_emulator.app as emulator_app

    truth_before = dataset.truth(ALL, collaborator_repos=["*"])
    people = [uid for uid, p in truth_before["users"].items() if p["type"] == "User"][:2]
    real_profile = dataset.profile
    odd = {people[0]: {"name": f"Nul{NUL}Name"}, people[1]: {"bio": f"half an emoji {LONE_SURROGATE}!"}}

    def profile(uid: int) -> dict:
        return real_profile(uid) | odd.get(uid, {})

    monkeypatch.setattr(dataset, "profile", profile)
    # As GitHub does, the emulator must send the lone surrogate \u-escaped: raw, it is no UTF-8.
    monkeypatch.setattr(emulator_app, "_json", lambda obj: json.dumps(obj, separators=(",", ":")).encode())
    run = InProcessRun(f"odd-text-{uuid.uuid4().hex[:6]}", slots=2)
    out = run.run({"repositories": dataset.repo_names(), "batch_size": 2})
    assert out["commit"].state == "success", failures(out)
    assert statuses(fresh_db[1]) == ["complete"]
    with psycopg.connect(fresh_db[1]) as c:
        stored = dict(
            c.execute(
                "SELECT user_id, coalesce(name, '') || '|' || coalesce(bio, '') FROM github_user WHERE user_id = ANY(%s)",
                (people,),
            ).fetchall()
        )
    assert stored[people[0]].startswith("NulName|")
    assert stored[people[1]].endswith("|half an emoji \ufffd!")
    check_exact(dataset, fresh_db[1])  # the truth's profiles, cleaned the same way
    figure("profiles with NUL and a lone surrogate", stored="cleaned", run="complete")


def test_a_record_postgres_refuses_is_dead_lettered_and_nothing_else_is_lost(
    dataset, emulator, redis_client, key_prefix, fresh_db, product_log, figure
):
    run = fetched(dataset.repo_names())
    staging = Staging(redis_client, run_namespace(key_prefix, DAG_ID, run.run_id))
    truth = dataset.truth(ALL, collaborator_repos=["*"])
    # A user with links, as staged: written again past the records' cleaning, with a date
    # Postgres's timestamptz cannot hold. The field is not new, so the tallies still agree.
    uid = next(u for (_, u) in truth["repo_users"] if truth["users"][u]["type"] == "User")
    record = json.loads(redis_client.hget(staging.key("users"), str(uid)))
    record["created_at"] = "294277-01-01T00:00:00Z"
    assert redis_client.hset(staging.key("users"), str(uid), json.dumps(record)) == 0
    its_links = sorted(
        f for f in redis_client.hkeys(staging.key("links")) if f.split(b":")[1] == str(uid).encode()
    )
    assert its_links

    commit = run.commit()
    assert commit.state == "success", repr(commit.error)  # never blocked by one record
    assert commit.result["dead_letters"] == 1 + len(its_links)
    assert statuses(fresh_db[1]) == ["complete_with_dead_letters"]
    assert "are in github_dead_letter" in product_log.text
    with psycopg.connect(fresh_db[1]) as c:
        dead = c.execute("SELECT kind, field, sqlstate, error, payload FROM github_dead_letter").fetchall()
    by_kind = {(kind, field): (code, err, bytes(payload)) for kind, field, code, err, payload in dead}
    code, err, payload = by_kind.pop(("users", str(uid)))
    assert (code, json.loads(payload)["created_at"]) == ("22008", "294277-01-01T00:00:00Z")
    assert "out of range" in err
    assert sorted(by_kind) == [("links", f.decode()) for f in its_links]
    assert {code for code, _, _ in by_kind.values()} == {"23503"}  # its links lack their user

    # Every other record is stored exactly: the truth without that user and its links.
    truth["users"].pop(uid)
    truth["repo_users"] = {k: v for k, v in truth["repo_users"].items() if k[1] != uid}
    check_exact(dataset, fresh_db[1], truth)
    figure(
        "a record postgres refuses",
        dead_lettered=len(dead),
        sqlstates=",".join(sorted({c for _, _, c, _, _ in dead})),
        others_lost=0,
        run="complete_with_dead_letters",
    )
