"""The real DAG with the author relations, end to end against the emulator's ground truth:
exact pairs, item counts, first and last authored dates, odd authors, a token without rights."""

from __future__ import annotations

import pytest
from e2e_harness import airflow_env, dags_test, migrate, read_authored, read_back, row_counts
from support import diff_against_truth, diff_authored

from github_collector.queries import RELATIONS
from github_emulator import DatasetSpec, EmulatorConfig, EmulatorServer, TokenConfig, build_dataset

pytestmark = pytest.mark.e2e
ALL = list(RELATIONS)
TOKEN = "e2e-authors-plain-41c7"  # a token without rights on any repository


@pytest.fixture()
def target_db(pg_dsn, pg_database):
    import psycopg

    name = f"{pg_database}_authors"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield name, f"host=127.0.0.1 port=5432 user=postgres dbname={name}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _spent(srv) -> int:
    return sum(v["core"] + v["graphql"] for v in srv.stats()["cost_by_token"].values())


def _check(dataset, dsn) -> None:
    truth = dataset.truth(ALL, token_name="plain")
    users, links, repos = read_back(dsn)
    assert diff_against_truth(truth, users, links, repos) == []
    tallies, authorless = read_authored(dsn)
    assert diff_authored(truth, tallies, authorless, repos) == []
    return truth, repos


def test_author_relations_end_to_end_with_a_token_without_rights(tmp_path, target_db, key_prefix):
    dataset = build_dataset(DatasetSpec(seed=5, n_repos=6, n_users=700, max_per_repo=300, max_items=400))
    names = dataset.repo_names()
    db, dsn = target_db
    cfg = EmulatorConfig(tokens=[TokenConfig(name="plain", token=TOKEN)])
    with EmulatorServer(dataset, cfg) as srv:
        env = airflow_env(tmp_path, github_url=srv.url, tokens=[TOKEN], pg_db=db, prefix=key_prefix)
        migrate(env)
        conf = {"repositories": names, "relations": ALL, "batch_size": 5}
        proc = dags_test(env, conf)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        truth, repos = _check(dataset, dsn)
        # Everything but stargazers and watchers, which are recorded as restricted.
        restricted = {
            (n, r) for n, v in repos.items() for r, st in v["relation_status"].items() if st == "restricted"
        }
        want = {(n.lower(), r) for n, v in truth["repos"].items() for r in v["restricted"]}
        assert restricted == want and want
        assert {r for _, r in restricted} == {"stargazers", "watchers"}
        assert any(v["not_applicable"] for v in truth["repos"].values())
        _, authorless = read_authored(dsn)
        kinds = {k for per in authorless.values() for rel in per.values() for k in rel}
        assert kinds == {"ghost", "Mannequin"}

        # New items, some in the very second of the stored mark, by people, a bot and a ghost.
        big = max(names, key=lambda n: len(getattr(dataset.lookup_full_name(n)[0], "pulls", [])))
        dataset.add_items(big, "pull_request_authors", 3, same_second=True)
        dataset.add_items(big, "pull_request_authors", 6, ghosts=1, bots=1)
        before = row_counts(dsn)
        spent = _spent(srv)
        proc = dags_test(env | {"GITHUB_REPO_USERS_RELIST_DAYS": "0"}, conf)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        _check(dataset, dsn)
        # One summary query per batch, and the one changed list's newest page rides along.
        assert _spent(srv) - spent <= -(-len(names) // conf["batch_size"]) + 1
        assert row_counts(dsn)["github_repo_user"] >= before["github_repo_user"]
