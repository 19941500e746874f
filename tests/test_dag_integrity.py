"""The DAG folder parses cleanly, and parsing does no I/O: no connection, Variable, socket."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]


def _dagbag():
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 2.x
        from airflow.models.dagbag import DagBag
    return DagBag(dag_folder=str(ROOT / "dags"))


def test_dagbag_has_no_import_errors_and_the_dag():
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    bag = _dagbag()
    assert bag.import_errors == {}
    assert "github_repo_users" in bag.dags
    dag = bag.dags["github_repo_users"]
    assert dag.catchup is False
    # a run longer than a day must not overlap the next, which would list everything again
    assert dag.max_active_runs == 1
    assert {"plan", "collect.quota_gate", "collect.fetch", "commit"} <= set(dag.task_dict)
    assert dag.params["batch_size"] == 50
    assert dag.task_dict["commit"].trigger_rule in ("all_done", "TriggerRule.ALL_DONE") or str(
        dag.task_dict["commit"].trigger_rule
    ).endswith("all_done")
    assert dag.doc_md and dag.tags


def test_fetch_slots_are_mapped_over_a_list_fixed_at_parse_time(monkeypatch):
    """Not over an upstream XCom: Airflow 2.11's `dags backfill` deadlocks on that shape."""
    from github_collector.settings import DEFAULT_FETCH_SLOTS

    monkeypatch.delenv("GITHUB_REPO_USERS_FETCH_SLOTS", raising=False)
    group = _dagbag().dags["github_repo_users"].task_group_dict["collect"]
    assert group._expand_input.value == {"slot": list(range(DEFAULT_FETCH_SLOTS))}
    monkeypatch.setenv("GITHUB_REPO_USERS_FETCH_SLOTS", "3")
    assert _dagbag().dags["github_repo_users"].task_group_dict["collect"]._expand_input.value == {
        "slot": [0, 1, 2]
    }


@pytest.mark.parametrize("bad", ["0", "-1", "many", "257"])
def test_a_bad_slot_count_is_an_import_error_naming_it(monkeypatch, bad):
    monkeypatch.setenv("GITHUB_REPO_USERS_FETCH_SLOTS", bad)
    errors = _dagbag().import_errors
    assert len(errors) == 1 and f"GITHUB_REPO_USERS_FETCH_SLOTS={bad!r}" in next(iter(errors.values()))


def test_a_missing_default_repository_list_is_an_import_error_naming_the_file(monkeypatch, tmp_path):
    """Not a silent fall-back to other repositories: the DAG does not load, and says why."""
    missing = tmp_path / "no-such-list.json"
    monkeypatch.setenv("GITHUB_REPO_USERS_REPOS_FILE", str(missing))
    errors = _dagbag().import_errors
    assert len(errors) == 1 and str(missing) in next(iter(errors.values()))


def _parse_under_guard(dag_file: Path) -> subprocess.CompletedProcess:
    """Parse a DAG file in a fresh interpreter where every kind of I/O we forbid raises."""
    script = textwrap.dedent(
        f"""
        import socket, sys
        sys.path.insert(0, {str(ROOT / "plugins")!r})
        import airflow  # Airflow's own start-up is not under test; the DAG file's is
        from airflow.providers.common.compat.sdk import BaseHook, Variable

        def refuse(*a, **k):
            raise AssertionError("I/O at DAG parse time: " + repr(a[:2]))

        socket.socket.connect = refuse
        socket.create_connection = refuse
        BaseHook.get_connection = classmethod(refuse)
        Variable.get = staticmethod(refuse)
        import runpy
        ns = runpy.run_path({str(dag_file)!r})
        print("parsed", sorted(k for k in ns if k == "github_repo_users"))
        """
    )
    env = dict(os.environ, AIRFLOW__CORE__LOAD_EXAMPLES="False", PYTHONPATH=str(ROOT / "plugins"))
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )


def test_parsing_opens_no_socket_and_reads_no_connection_or_variable():
    proc = _parse_under_guard(ROOT / "dags" / "github_repo_users_dag.py")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "parsed ['github_repo_users']" in proc.stdout


@pytest.mark.parametrize(
    "line",
    [
        "BaseHook.get_connection('github_default')",
        "Variable.get('x')",
        "__import__('socket').create_connection(('127.0.0.1', 6379))",
        "__import__('redis').Redis().ping()",
    ],
)
def test_the_guard_catches_io_at_parse_time(tmp_path, line):
    bad = tmp_path / "bad_dag.py"
    bad.write_text("from airflow.providers.common.compat.sdk import BaseHook, Variable\n" + line + "\n")
    proc = _parse_under_guard(bad)
    assert proc.returncode != 0
    assert "I/O at DAG parse time" in proc.stderr
