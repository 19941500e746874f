"""Hostile and bad input through the Params form and the connections.

Each case must be refused with a message that names the bad value, before anything is
written: no Redis key under the run's prefix, no table in the target database. Params go
through the DAG's own Params (what the trigger form and `dags trigger -c` validate), then
through the plan task, which checks the same rules again for runs created by other means.
"""

from __future__ import annotations

import copy
import json
import os

import psycopg
import pytest
from e2e_harness import read_back
from fault_harness import ALL, InProcessRun, conn_env, failures
from support import wait_until

from github_collector.plan import MAX_REPOS
from github_emulator import DatasetSpec, EmulatorConfig, EmulatorServer, TokenConfig, build_dataset

pytestmark = pytest.mark.faults
TOKEN = "input-fault-token-4e7a90"
GOOD = {"repositories": ["apache/airflow"], "relations": ALL, "batch_size": 50, "full_refresh": False}

PARAM_CASES = [
    ({"repositories": ["not a repo"]}, "not a repo"),
    ({"repositories": ["a/b/c"]}, "a/b/c"),
    ({"repositories": ["apache/airflow'; DROP TABLE github_user; --"]}, "DROP TABLE"),
    ({"repositories": ['apache/airflow"); DELETE FROM x; --']}, "DELETE FROM"),
    ({"repositories": ["$(rm -rf ~)/x"]}, "$(rm -rf ~)/x"),
    ({"repositories": ["`id`/repo"]}, "`id`/repo"),
    ({"repositories": ["apache/airflow|cat /etc/passwd"]}, "cat /etc/passwd"),
    ({"repositories": ["../etc/passwd"]}, "../etc/passwd"),
    ({"repositories": ["apache/../../secrets"]}, "apache/../../secrets"),
    ({"repositories": ["apache/.."]}, "apache/.."),
    ({"repositories": ["apache/."]}, "apache/."),
    ({"repositories": ["аpache/airflow"]}, "аpache/airflow"),  # Cyrillic а
    ({"repositories": ["ａpache/airflow"]}, "ａpache/airflow"),  # fullwidth a
    ({"repositories": ["apache/air\u200bflow"]}, "apache/air\u200bflow"),  # zero-width space
    ({"repositories": ["apache/air flow"]}, "apache/air flow"),
    ({"repositories": ["apache/airflow\x00"]}, "apache/airflow\x00"),
    ({"repositories": [""]}, "''"),
    ({"repositories": ["apache/"]}, "apache/"),
    ({"repositories": ["/airflow"]}, "/airflow"),
    ({"repositories": ["-apache/airflow"]}, "-apache/airflow"),
    ({"repositories": ["apache-/airflow"]}, "apache-/airflow"),
    ({"repositories": ["a" * 40 + "/x"]}, "a" * 40),
    ({"repositories": ["o/" + "n" * 150]}, "n" * 50),
    ({"repositories": [42]}, "42"),
    ({"repositories": [None]}, "None"),
    ({"repositories": []}, "repositories"),
    ({"repositories": "apache/airflow"}, "apache/airflow"),
    ({"repositories": [f"o/r{i}" for i in range(MAX_REPOS + 1)]}, "is too long"),
    ({"relations": ["followers"]}, "followers"),
    ({"relations": []}, "relations"),
    ({"relations": ["contributors", "contributors"]}, "contributors"),
    ({"relations": "contributors"}, "contributors"),
    ({"batch_size": 0}, "0"),
    ({"batch_size": 501}, "501"),
    ({"batch_size": "50"}, "'50'"),
    ({"batch_size": 2.5}, "2.5"),
    ({"batch_size": True}, "True"),
    ({"full_refresh": "yes"}, "yes"),
    ({"max_author_pages": -1}, "-1"),
    ({"max_author_pages": 100_001}, "100001"),
    ({"max_author_pages": "200"}, "'200'"),
    ({"max_author_pages": True}, "True"),
]


@pytest.fixture(scope="module")
def dag():
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 2.x
        from airflow.models.dagbag import DagBag
    from pathlib import Path

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[1] / "dags"))
    assert bag.import_errors == {}
    return bag.dags["github_repo_users"]


def _form(dag, conf: dict) -> dict:
    """What the trigger does with a conf: merge it into the DAG's Params and validate them."""
    params = copy.deepcopy(dag.params)
    params.update(conf)
    return params.validate()


def _nothing_written(redis_client, prefix: str, dsn: str) -> None:
    # The token check leases each token like every request does; freeing a lease leaves a
    # wake-up signal for waiting workers that expires within a second. Nothing else may stay.
    assert wait_until(lambda: list(redis_client.scan_iter(match=prefix + "*")) == [], timeout=3), list(
        redis_client.scan_iter(match=prefix + "*")
    )
    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'github_%'").fetchone()[0] == 0


@pytest.fixture()
def emulator():
    ds = build_dataset(DatasetSpec(seed=61, n_repos=3, n_users=200, max_per_repo=60))
    cfg = EmulatorConfig(
        tokens=[
            TokenConfig(name="ok", token=TOKEN, collaborator_repos=("*",)),
            TokenConfig(name="revoked", token=TOKEN + "-revoked", valid=False),
            TokenConfig(
                name="noemail", token=TOKEN + "-noemail", scopes=("repo",), collaborator_repos=("*",)
            ),
        ]
    )
    with EmulatorServer(ds, cfg) as srv:
        yield srv


@pytest.fixture()
def env(emulator, monkeypatch, fresh_db, key_prefix):
    values = conn_env(github_url=emulator.url, tokens=[TOKEN], pg_db=fresh_db[0], prefix=key_prefix)
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


@pytest.mark.parametrize(("conf", "named"), PARAM_CASES, ids=[f"param{i}" for i in range(len(PARAM_CASES))])
def test_bad_params_are_refused_naming_the_value_before_anything_is_written(
    conf, named, dag, env, redis_client, key_prefix, fresh_db
):
    from airflow.providers.common.compat.sdk import AirflowFailException, ParamValidationError

    with pytest.raises(ParamValidationError) as form:
        _form(dag, conf)

    def names(message: str) -> bool:  # invisible characters are shown escaped, as repr() does
        return named in message or repr(named)[1:-1] in message

    assert names(str(form.value))
    # A run created without the form (API, CLI conf, another DAG) meets the plan's own check.
    plan = InProcessRun("bad-params").plan(GOOD | conf)
    assert plan.state == "failed" and isinstance(plan.error, AirflowFailException)
    message = str(plan.error)
    assert (
        names(message)
        or named.strip("'") in message
        or (named == "is too long" and str(MAX_REPOS) in message)
    ), message
    _nothing_written(redis_client, key_prefix, fresh_db[1])


def _github(host: str | None, password: str | None, extra: dict | str) -> str:
    conn = {"conn_type": "github_repo_users", "host": host, "password": password, "extra": extra}
    return json.dumps({k: v for k, v in conn.items() if v is not None})


CONN_CASES = [
    ("github missing", {"AIRFLOW_CONN_GITHUB_DEFAULT": None}, "'github_default' is missing"),
    ("ftp base URL", {"github": ("ftp://example.com", TOKEN)}, "ftp://example.com"),
    ("no scheme or host", {"github": ("https://", TOKEN)}, "'https://'"),
    (
        "credentials in URL",
        {"github": ("https://me:hunter2@api.example.com", TOKEN)},
        "must not embed credentials",
    ),
    (
        "not a connection",
        {"AIRFLOW_CONN_GITHUB_DEFAULT": "x"},
        "'github_default': the github connection has no token",
    ),
    ("extra not JSON", {"github": (None, TOKEN, "{not json")}, "extra is not valid JSON"),
    ("reserve not a number", {"github": (None, TOKEN, {"reserve": "lots"})}, "'lots'"),
    ("timeout zero", {"github": (None, TOKEN, {"timeout": 0})}, "timeout"),
    ("tokens not a list", {"github": (None, TOKEN, {"tokens": 5})}, "'tokens'"),
    ("no token", {"github": (None, None)}, "no token"),
    ("negative pace", {"github": (None, TOKEN, {"rest_per_minute": -1})}, "rest_per_minute"),
    ("not the REST root", {"github": ("{url}/not-the-api", TOKEN)}, "the REST API root"),
    ("every token revoked", {"github": (None, TOKEN + "-revoked")}, "rejected every token"),
    ("postgres missing", {"AIRFLOW_CONN_POSTGRES_DEFAULT": None}, "'postgres_default' is missing"),
    ("redis missing", {"AIRFLOW_CONN_REDIS_DEFAULT": None}, "redis_default"),
    (
        "unreachable GitHub",
        {"github": ("http://127.0.0.1:9", TOKEN)},
        "cannot reach GitHub at http://127.0.0.1:9",
    ),
]


@pytest.mark.parametrize(("case", "change", "named"), CONN_CASES, ids=[c[0] for c in CONN_CASES])
def test_bad_connections_are_refused_by_the_plan_before_anything_is_written(
    case, change, named, emulator, env, monkeypatch, redis_client, key_prefix, fresh_db
):
    for key, value in change.items():
        if key == "github":
            host, password, *extra = value
            host = host.format(url=emulator.url) if host else emulator.url
            monkeypatch.setenv(
                "AIRFLOW_CONN_GITHUB_DEFAULT", _github(host, password, extra[0] if extra else {})
            )
        elif value is None:
            monkeypatch.delenv(key)
        else:
            monkeypatch.setenv(key, value)
    plan = InProcessRun("bad-connection").plan(GOOD)
    assert plan.state == "failed"
    assert named in str(plan.error), repr(plan.error)
    assert "hunter2" not in str(plan.error) and TOKEN not in str(plan.error)
    _nothing_written(redis_client, key_prefix, fresh_db[1])


def test_accepted_input_is_normalised_and_deduplicated(dag, env, redis_client, key_prefix):
    conf = {"repositories": ["Apache/Airflow", "apache/airflow", "apache/airflow.git", " apache/airflow\n"]}
    assert _form(dag, {"repositories": conf["repositories"][:3]})  # the form takes these as they are
    plan = InProcessRun("normalised").plan(GOOD | conf)
    assert plan.state == "success", repr(plan.error)
    assert plan.result["repositories"] == 1
    big = InProcessRun("ten-thousand").plan(GOOD | {"repositories": [f"o/r{i}" for i in range(MAX_REPOS)]})
    assert big.state == "success" and big.result["repositories"] == MAX_REPOS
    assert big.result["batches"] == MAX_REPOS // 50


def test_a_token_without_the_email_scope_leaves_stored_emails_alone(
    emulator, env, monkeypatch, fresh_db, product_log
):
    names = emulator.app.ds.repo_names()
    first = InProcessRun("with-email", slots=1).run({"repositories": names, "batch_size": 20})
    assert first["commit"].state == "success", failures(first)
    users, _, _ = read_back(fresh_db[1])
    emails = {uid: u["email"] for uid, u in users.items() if u["email"]}
    assert emails, "the dataset has no public email: the test proves nothing"
    monkeypatch.setenv(
        "AIRFLOW_CONN_GITHUB_DEFAULT",
        conn_env(github_url=emulator.url, tokens=[TOKEN + "-noemail"], pg_db=fresh_db[0], prefix="x")[
            "AIRFLOW_CONN_GITHUB_DEFAULT"
        ],
    )
    second = InProcessRun("without-email", slots=1).run(
        {"repositories": names, "batch_size": 20, "full_refresh": True}
    )
    assert second["commit"].state == "success", failures(second)
    assert "lacks the scope for profile email; email is left unknown" in product_log.text
    users, _, _ = read_back(fresh_db[1])
    assert {uid: users[uid]["email"] for uid in emails} == emails
