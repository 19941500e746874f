"""The real DAG end to end through `airflow dags test`, against the emulator, real Redis and Postgres."""

from __future__ import annotations

import pytest
from e2e_harness import airflow_env, dags_test, duplicate_count, migrate, read_back, row_counts
from support import diff_against_truth

from github_collector.emulator import DatasetSpec, EmulatorConfig, EmulatorServer, TokenConfig, build_dataset

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
        proc = dags_test(env, conf)
        assert proc.returncode == 0, _tail(proc)
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

        # An incremental (scheduled-style) run over unchanged repos spends almost nothing.
        spent_before = _spent(srv)
        proc = dags_test(env, conf | {"full_refresh": False})
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
