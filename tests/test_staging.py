"""Staging.write_step: one atomic script per step, and what it may overwrite."""

from __future__ import annotations

import json

import pytest

from github_collector.collector import Step
from github_collector.records import link
from github_collector.staging import Staging, StagingLost, run_namespace

pytestmark = pytest.mark.integration


@pytest.fixture()
def staging(redis_client, key_prefix):
    st = Staging(redis_client, run_namespace(key_prefix, "dag", "run"))
    st.save_plan({"batches": [["a/b"]], "relations": ["contributors"]})
    return st


def user(uid: int, full: bool) -> dict:
    return {"user_id": uid, "login": f"u{uid}", "profile_complete": full, "name": "N" if full else None}


def staged_users(staging: Staging) -> dict[int, dict]:
    return {int(k): json.loads(v) for k, v in staging.redis.hgetall(staging.key("users")).items()}


def test_a_list_item_never_replaces_a_full_profile(staging):
    staging.write_step(0, Step(state={"n": 1}, users=[user(1, True), user(2, False)]))
    # Later: list items for both, and a full profile for 2 before its list item in one step.
    staging.write_step(0, Step(state={"n": 2}, users=[user(1, False), user(2, True), user(2, False)]))
    users = staged_users(staging)
    assert users[1]["profile_complete"] and users[2]["profile_complete"]
    assert staging.load_state(0) == {"n": 2}


def test_a_big_step_is_stored_whole_with_its_counters(staging):
    users = [user(i, i % 2 == 0) for i in range(3000)]  # more than one HSET slice of each kind
    links = [link(7, i, "stargazers", starred_at="2024-01-01T00:00:00Z") for i in range(2500)]
    repos = [{"requested": "a/b", "repo_id": 7}]
    staging.write_step(
        0, Step(state={"s": 1}, users=users, links=links, repos=repos, cost={"graphql": 3}, pages=4)
    )
    assert staging.counts() == {"repos": 1, "users": 3000, "links": 2500}
    assert staging.stats() == {"pages": 4, "cost_graphql": 3}
    assert json.loads(staging.redis.hget(staging.key("links"), "7:5:stargazer"))["user_id"] == 5
    assert staging.redis.ttl(staging.key("users")) > 0


def test_nothing_is_written_into_a_lost_namespace(staging):
    staging.redis.delete(staging.key("lost_sentinel"))
    with pytest.raises(StagingLost):
        staging.write_step(0, Step(state={"n": 1}, users=[user(1, True)], pages=1))
    assert staging.counts() == {"repos": 0, "users": 0, "links": 0}
    assert staging.load_state(0) is None and staging.stats() == {}


def test_the_checkpoint_is_compressed(staging):
    state = {"repos": {f"o/r{i}": {"streams": {"forkers": {"cursor": None}}} for i in range(200)}}
    staging.write_step(0, Step(state=state))
    raw = staging.redis.hget(staging.key("batch", 0, "state"), "state")
    assert len(raw) < len(json.dumps(state)) / 5
    assert staging.load_state(0) == state


# -- tallies: what the steps added, checked against what the staged hashes hold -------------
def stage_two_batches(staging: Staging) -> None:
    staging.write_step(
        0, Step(state={"b": 0}, users=[user(1, True), user(2, False)], repos=[{"requested": "a/b"}])
    )
    staging.write_step(1, Step(state={"b": 1}, users=[user(2, True), user(3, True)]))  # 2 is not new
    staging.write_step(
        1, Step(state={"b": 1}, links=[link(7, u, "stargazers") for u in (1, 2, 3)] + [link(7, 1, "forkers")])
    )
    staging.set_outcome(0, "done")
    staging.set_outcome(1, "done")


def test_each_checkpoint_counts_the_new_fields_its_steps_added(staging):
    stage_two_batches(staging)
    counts = [
        {
            k.decode(): v
            for k, v in staging.redis.hgetall(staging.key("batch", i, "state")).items()
            if k != b"state"
        }
        for i in (0, 1)
    ]
    assert counts == [
        {"users": b"2", "links": b"0", "repos": b"1"},
        {"users": b"1", "links": b"4", "repos": b"0"},
    ]
    tally = staging.verify(2)
    assert tally.intact, tally.problems
    assert tally.expected == tally.present == {"repos": 1, "users": 3, "links": 4}
    # Fields the commit deletes are counted as removed: what is left still adds up.
    staging.delete_fields("users", [b"1", b"3"])
    assert staging.verify(2).intact
    assert staging.verify(2).expected["users"] == 1


@pytest.mark.parametrize("lose", ["links", "users", "repos", "checkpoint", "some users"])
def test_verify_names_what_redis_lost(staging, lose):
    stage_two_batches(staging)
    if lose == "checkpoint":
        staging.redis.delete(staging.key("batch", 1, "state"))
    elif lose == "some users":
        staging.redis.hdel(staging.key("users"), "2")  # deleted around the tally, as eviction does
    else:
        staging.redis.delete(staging.key(lose))
    problems = "; ".join(staging.verify(2).problems)
    expected = {
        "links": "links: 0 of the 4 staged and uncommitted records are left (4 missing)",
        "users": "users: 0 of the 3 staged and uncommitted records are left (3 missing)",
        "repos": "repos: 0 of the 1 staged and uncommitted records are left (1 missing)",
        "checkpoint": "the checkpoint of 1 finished batch(es) is gone: 1",
        "some users": "users: 2 of the 3 staged and uncommitted records are left (1 missing)",
    }[lose]
    assert expected in problems


def test_verify_sees_a_lost_checkpoint_of_an_unfinished_batch(staging):
    stage_two_batches(staging)
    staging.redis.delete(staging.key("batch", 0, "outcome"))  # batch 0 looks unfinished
    staging.redis.delete(staging.key("batch", 0, "state"))
    assert "the batches' checkpoints and the run's tally disagree" in "; ".join(staging.verify(2).problems)


def test_every_key_of_a_run_hashes_to_one_cluster_slot(staging):
    from redis.crc import key_slot

    stage_two_batches(staging)
    staging.next_batch(0, 2)
    keys = list(staging.redis.scan_iter(match=staging.ns + "*"))
    assert len(keys) >= 10
    assert {key_slot(k) for k in keys} == {key_slot(staging.key("plan").encode())}
