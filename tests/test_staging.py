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


def test_the_checkpoint_is_compressed_and_an_older_plain_one_still_loads(staging):
    state = {"repos": {f"o/r{i}": {"streams": {"forkers": {"cursor": None}}} for i in range(200)}}
    staging.write_step(0, Step(state=state))
    raw = staging.redis.get(staging.key("batch", 0, "state"))
    assert len(raw) < len(json.dumps(state)) / 5
    assert staging.load_state(0) == state
    staging.redis.set(staging.key("batch", 1, "state"), json.dumps({"n": 1}))  # written before compression
    assert staging.load_state(1) == {"n": 1}
