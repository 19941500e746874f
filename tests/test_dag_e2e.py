"""The real DAG end to end through `airflow dags test`, against the emulator, real Redis and Postgres."""

from __future__ import annotations

import subprocess

import pytest
from e2e_harness import (
    AIRFLOW,
    airflow_env,
    airflow_major,
    asset_event_extras,
    dags_test,
    duplicate_count,
    migrate,
    read_back,
    row_counts,
)
from support import diff_against_truth

from github_collector.settings import USERS_ASSET_NAME
from github_emulator import DatasetSpec, EmulatorConfig, EmulatorServer, TokenConfig, build_dataset

pytestmark = pytest.mark.e2e
ALL = ["contributors", "forkers", "stargazers", "watchers"]
T1, T2 = "e2e-token-alpha-5d1c", "e2e-token-beta-99ae"


@pytest.fixture(scope="module")
def dataset():
    return build_dataset(DatasetSpec(seed=11, n_repos=8, n_users=900, max_per_repo=350))


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow")
    migrate(airflow_env(home, github_url="http://127.0.0.1:9", tokens=["x"], pg_db="postgres", prefix="x"))
    return home


def _fresh_db(pg_dsn: str, name: str) -> str:
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


@pytest.fixture()
def target_db(pg_dsn, pg_database, request):
    name = f"{pg_database}_{request.node.name[:20].lower()}"
    _fresh_db(pg_dsn, name)
    yield name, f"host=127.0.0.1 port=5432 user=postgres dbname={name}"
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _tail(proc) -> str:
    return (proc.stdout + proc.stderr)[-3000:]


def test_full_run_matches_ground_truth_and_a_rerun_changes_nothing(
    dataset, airflow_home, target_db, key_prefix
):
    names = dataset.repo_names()
    cfg = EmulatorConfig(
        tokens=[
            TokenConfig(name="t1", token=T1, collaborator_repos=tuple(names[:3])),
            TokenConfig(name="t2", token=T2),
        ]
    )
    db, dsn = target_db
    with EmulatorServer(dataset, cfg) as srv:
        env = airflow_env(airflow_home, github_url=srv.url, tokens=[T1, T2], pg_db=db, prefix=key_prefix)
        conf = {"repositories": names, "relations": ALL, "batch_size": 5}
        if airflow_major() == 2:
            # Airflow 2's `dags test` records a Dataset event only for a dataset the DAG processor
            # has synced (a scheduler does it; here the CLI does).
            subprocess.run([AIRFLOW, "dags", "reserialize"], env=env, check=True, capture_output=True)
        events_before = len(asset_event_extras(env, USERS_ASSET_NAME))
        proc = dags_test(env, conf)
        assert proc.returncode == 0, _tail(proc)
        _assert_asset_event_carries_the_commit(env, events_before, dsn, batches=-(-len(names) // 5))
        truth = dataset.truth(ALL, collaborator_repos=names[:3])
        users, links, repos = read_back(dsn)
        assert diff_against_truth(truth, users, links, repos) == []
        # restricted relations are recorded as unavailable, never as empty
        hidden = [r for r in repos.values() if "stargazers" in r["unavailable_relations"]]
        assert hidden and all(r["relation_status"]["stargazers"] == "restricted" for r in hidden)
        first = row_counts(dsn)
        assert first["github_repo_user"] > 100

        proc = dags_test(env, conf | {"full_refresh": True})
        assert proc.returncode == 0, _tail(proc)
        assert row_counts(dsn) == first
        assert duplicate_count(dsn) == 0
        assert diff_against_truth(truth, *read_back(dsn)) == []

        # An incremental (scheduled-style) run over unchanged repos spends almost nothing. Without
        # the scheduled re-listing, whose daily share depends on the date (the bench measures it).
        spent_before = _spent(srv)
        proc = dags_test(env | {"GITHUB_REPO_USERS_RELIST_DAYS": "0"}, conf | {"full_refresh": False})
        assert proc.returncode == 0, _tail(proc)
        spent = _spent(srv) - spent_before
        batches = -(-len(names) // conf["batch_size"])
        assert spent <= batches, spent  # one summary query per batch; 304s and skipped lists are free
        assert row_counts(dsn) == first
        assert diff_against_truth(truth, *read_back(dsn)) == []


def test_quota_running_out_mid_run_defers_and_completes_exactly(dataset, airflow_home, target_db, key_prefix):
    names = dataset.repo_names()
    cfg = EmulatorConfig(
        tokens=[
            TokenConfig(name="t1", token=T1, core_limit=6, graphql_limit=4, collaborator_repos=tuple(names))
        ],
        window_seconds=4,
    )
    db, dsn = target_db
    with EmulatorServer(dataset, cfg) as srv:
        env = airflow_env(
            airflow_home,
            github_url=srv.url,
            tokens=[T1],
            pg_db=db,
            prefix=key_prefix,
            # a zero inline wait makes every exhaustion a deferral, which is what this test is about
            extra={"AIRFLOW_CONN_GITHUB_DEFAULT": _conn(srv.url, [T1], max_inline_wait=0, reserve=0)},
        )
        proc = dags_test(env, {"repositories": names, "relations": ALL, "batch_size": 4})
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, _tail(proc)
        assert "deferring until" in out
        truth = dataset.truth(ALL, collaborator_repos=names)
        assert diff_against_truth(truth, *read_back(dsn)) == []
        ok_gets = [
            e["path"]
            for e in srv.request_log()
            if e["status"] == 200 and e["method"] == "GET" and e["path"] != "/rate_limit"  # free, re-read
        ]
        assert len(ok_gets) == len(set(ok_gets)), "a REST page was fetched twice"
        assert srv.stats()["primary_limit_hits"] >= 0


def _assert_asset_event_carries_the_commit(env: dict, before: int, dsn: str, batches: int) -> None:
    """The run's one Asset event, as Airflow recorded it, carries what the commit wrote."""
    import psycopg

    events = asset_event_extras(env, USERS_ASSET_NAME)[before:]
    assert len(events) == 1, events
    extra = events[0]
    with psycopg.connect(dsn) as c:
        (recorded,) = c.execute(
            "SELECT counts FROM github_collect_run WHERE status = 'complete' ORDER BY finished_at DESC LIMIT 1"
        ).fetchone()
        relations = c.execute("SELECT count(*) FROM github_repo_user_relation").fetchone()[0]
    tables = row_counts(dsn)
    # A first run into an empty database: every staged record is a new row.
    assert extra["committed"]["links"] == relations > 0
    assert extra["committed"]["users"] == tables["github_user"] > 0
    assert extra["committed"]["repos"] == tables["github_repo_request"] > 0
    assert extra["staged"] == {k: extra["committed"][k] for k in ("repos", "users", "links")}
    assert extra["tables"] == {**tables, "github_repo_user_relation": relations}
    assert extra["dead_letters"] == 0
    assert extra["batches"] == batches
    assert extra["quota"] == recorded["quota"] and extra["quota"]["pages"] > 0
    assert extra["commit_time"] == recorded["commit_time"]


def _spent(srv) -> int:
    return sum(v["core"] + v["graphql"] for v in srv.stats()["cost_by_token"].values())


def _conn(url: str, tokens: list[str], **extra) -> str:
    import json

    return json.dumps(
        {
            "conn_type": "github_repo_users",
            "host": url,
            "password": tokens[0],
            "extra": {"tokens": tokens[1:], **extra},
        }
    )


@pytest.mark.parametrize(
    ("conf", "named"),
    [
        ({"repositories": ["not a repo"]}, "not a repo"),
        ({"repositories": ["a/b/c"]}, "a/b/c"),
        ({"repositories": ["; drop table"]}, "; drop table"),
        ({"relations": ["followers"]}, "followers"),
        ({"batch_size": 0}, "0"),
    ],
)
def test_invalid_params_are_refused_naming_the_value_and_nothing_is_written(
    conf, named, airflow_home, target_db, key_prefix, redis_client
):
    db, dsn = target_db
    env = airflow_env(
        airflow_home, github_url="http://127.0.0.1:9", tokens=["unused"], pg_db=db, prefix=key_prefix
    )
    proc = dags_test(env, {"repositories": ["a/b"]} | conf, timeout=120)
    assert proc.returncode != 0
    assert named in proc.stdout + proc.stderr
    assert "ParamValidationError" in proc.stdout + proc.stderr
    import psycopg

    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'github_%'").fetchone()[0] == 0
    assert not list(redis_client.scan_iter(match=key_prefix + "*"))
