"""The plan refuses a Redis that may evict staged records, or that runs as a cluster, before it
writes anything: each case runs against a redis-server of the test's own, configured so."""

from __future__ import annotations

import pytest
from e2e_harness import free_port
from fault_harness import conn_env
from fixtures_emulator import EMU_TOKEN_COLLAB
from private_redis import PrivateRedis

from github_collector.run_tasks import plan_run
from github_collector.staging import Staging, run_namespace

pytestmark = pytest.mark.integration
DAG_ID = "github_repo_users"
LIMIT = ("--maxmemory", "64mb")
NO_CONFIG = ("--rename-command", "CONFIG", "")  # as managed services that refuse CONFIG


@pytest.fixture()
def redis_with(tmp_path, emu_server, key_prefix, monkeypatch, fresh_db):
    """start(*redis-server options) -> a Redis so configured, with the connections pointing at it."""
    servers: list[PrivateRedis] = []

    def start(*args: str) -> PrivateRedis:
        if "--cluster-enabled" in args:  # its bus port is port + 10000 unless given: past 65535 for some
            args = (*args, "--cluster-port", str(free_port()))
        rds = PrivateRedis(tmp_path / str(len(servers)), appendonly=False, extra_args=args)
        rds.workdir.mkdir()
        servers.append(rds.start())
        env = conn_env(
            github_url=emu_server.url,
            tokens=[EMU_TOKEN_COLLAB],
            pg_db=fresh_db[0],  # the plan reads what is due from it once Redis passed
            prefix=key_prefix,
            redis_port=rds.port,
        )
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        return rds

    yield start
    for rds in servers:
        rds.stop()


PARAMS = {"repositories": ["o/r"], "relations": ["contributors"], "batch_size": 5, "full_refresh": False}


def plan(run_id: str = "run-1") -> dict:
    return plan_run(dict(PARAMS), DAG_ID, run_id)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (
            (*LIMIT, "--maxmemory-policy", "volatile-lru"),
            "maxmemory-policy volatile-lru, maxmemory 67,108,864",
        ),
        ((*LIMIT, "--maxmemory-policy", "allkeys-lru"), "maxmemory-policy allkeys-lru"),
        ((*LIMIT, "--maxmemory-policy", "volatile-ttl", *NO_CONFIG), "maxmemory-policy volatile-ttl"),
        (("--cluster-enabled", "yes"), "cluster mode (cluster_enabled:1)"),
    ],
    ids=["volatile-lru", "allkeys-lru", "volatile-ttl, CONFIG refused", "cluster"],
)
def test_the_plan_refuses_a_redis_that_can_lose_staging_before_writing_anything(redis_with, args, named):
    from airflow.providers.common.compat.sdk import AirflowFailException

    rds = redis_with(*args)
    with pytest.raises(AirflowFailException) as err:
        plan()
    assert named in str(err.value)
    if "cluster" not in named:
        assert "noeviction" in str(err.value) and "GITHUB_REPO_USERS_ALLOW_EVICTING_REDIS" in str(err.value)
    assert rds.client().dbsize() == 0  # no plan, no sentinel, not even a token lease


@pytest.mark.parametrize(
    "args",
    [
        (*LIMIT, "--maxmemory-policy", "noeviction"),
        ("--maxmemory-policy", "allkeys-lru"),
        (*LIMIT, *NO_CONFIG),
    ],
    ids=["noeviction", "no memory limit", "noeviction, CONFIG refused"],
)
def test_the_plan_accepts_a_redis_that_keeps_staging(redis_with, key_prefix, args):
    rds = redis_with(*args)
    assert plan()["batches"] == 1
    assert Staging(rds.client(), run_namespace(key_prefix, DAG_ID, "run-1")).load_plan() is not None


def test_the_memory_policy_is_read_from_info_when_config_is_refused(redis_with):
    from github_collector.staging import redis_memory_policy

    rds = redis_with(*LIMIT, "--maxmemory-policy", "allkeys-lfu", *NO_CONFIG)
    assert redis_memory_policy(rds.client()) == ("allkeys-lfu", 64 * 1024 * 1024)


def test_the_override_runs_on_an_evicting_redis_saying_it_is_unsafe(redis_with, monkeypatch, product_log):
    rds = redis_with(*LIMIT, "--maxmemory-policy", "volatile-lru")
    monkeypatch.setenv("GITHUB_REPO_USERS_ALLOW_EVICTING_REDIS", "1")
    assert plan()["batches"] == 1
    assert rds.client().dbsize() > 0
    assert "may evict this run's staged records (maxmemory-policy volatile-lru" in product_log.text
    assert "running anyway" in product_log.text


def test_an_unreadable_override_is_refused_naming_it(redis_with, monkeypatch):
    from airflow.providers.common.compat.sdk import AirflowFailException

    rds = redis_with(*LIMIT, "--maxmemory-policy", "volatile-lru")
    monkeypatch.setenv("GITHUB_REPO_USERS_ALLOW_EVICTING_REDIS", "maybe")
    with pytest.raises(AirflowFailException, match="GITHUB_REPO_USERS_ALLOW_EVICTING_REDIS='maybe'"):
        plan()
    assert rds.client().dbsize() == 0
