"""The built wheel installed for real: Airflow finds the provider through its entry point,
knows its connection type, runs its connection test, and the DAG loads from the package
(no plugins folder, no checkout on the path)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fixtures_provider import ROOT, provider_env

from github_collector import __version__, connection_form
from github_collector.quota import fingerprint

pytestmark = pytest.mark.e2e


def airflow(python: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), "-m", "airflow", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("airflow-home")


@pytest.fixture(scope="module")
def migrated(provider_python: Path, home: Path) -> dict:
    env = provider_env(home)
    proc = airflow(provider_python, env, "db", "migrate")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return env


def test_the_package_comes_from_the_wheel(provider_python, migrated):
    script = textwrap.dedent(
        """
        import json, github_collector
        from importlib.metadata import distribution
        from github_collector.plan import default_repositories
        print(json.dumps({"file": github_collector.__file__, "version": distribution("github-repo-users").version,
                          "defaults": default_repositories()}))
        """
    )
    proc = subprocess.run(
        [str(provider_python), "-c", script], env=migrated, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    venv = provider_python.parents[1]
    assert Path(seen["file"]).is_relative_to(venv) and not Path(seen["file"]).is_relative_to(ROOT)
    assert seen["version"] == __version__
    assert (
        seen["defaults"]
        == json.loads((ROOT / "plugins/github_collector/repositories.json").read_text())["repositories"]
    )


def test_airflow_lists_the_provider_and_its_connection_type(provider_python, migrated):
    listed = airflow(provider_python, migrated, "providers", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr[-3000:]
    providers = {p["package_name"]: p for p in json.loads(listed.stdout)}
    assert providers["github-repo-users"]["version"] == __version__
    hooks = airflow(provider_python, migrated, "providers", "hooks", "-o", "json")
    assert hooks.returncode == 0, hooks.stderr[-3000:]
    by_type = {h["connection_type"]: h for h in json.loads(hooks.stdout)}
    assert by_type["github_repo_users"]["class"] == "github_collector.hook.GitHubHook"
    assert by_type["github_repo_users"]["package_name"] == "github-repo-users"


def test_airflow_builds_the_connection_form_from_the_provider(provider_python, migrated):
    """Airflow 3.2+ reads conn-fields and ui-field-behaviour from the provider info; Airflow 2.x
    calls the hook's get_connection_form_widgets / get_ui_field_behaviour. Either way the form
    gets every field, and the hook is not dropped for a field class Airflow does not accept."""
    script = textwrap.dedent(
        """
        import json
        from airflow.providers_manager import ProvidersManager
        pm = ProvidersManager()
        hook = pm.hooks["github_repo_users"]
        print(json.dumps({
            "hook": hook.hook_class_name if hook else None,
            "fields": sorted(k for k in pm.connection_form_widgets if k.startswith("extra__github_repo_users__")),
            "behaviour": pm.field_behaviours.get("github_repo_users"),
        }))
        """
    )
    proc = subprocess.run(
        [str(provider_python), "-c", script], env=migrated, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["hook"] == connection_form.HOOK_CLASS
    assert seen["fields"] == sorted(f"extra__github_repo_users__{f.key}" for f in connection_form.FIELDS)
    assert sorted(seen["behaviour"]["hidden_fields"]) == sorted(connection_form.HIDDEN_FIELDS)
    assert seen["behaviour"]["relabeling"] == connection_form.RELABELING


def test_the_dag_loads_from_the_installed_package(provider_python, migrated):
    script = textwrap.dedent(
        f"""
        try:
            from airflow.dag_processing.dagbag import DagBag
        except ImportError:
            from airflow.models.dagbag import DagBag
        bag = DagBag(dag_folder={str(ROOT / "dags")!r})
        assert bag.import_errors == {{}}, bag.import_errors
        print(sorted(bag.dags))
        """
    )
    proc = subprocess.run(
        [str(provider_python), "-c", script], env=migrated, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "github_repo_users" in proc.stdout


def _added_type(python: Path, env: dict, conn_id: str) -> str:
    added = airflow(
        python,
        env,
        "connections",
        "add",
        conn_id,
        "--conn-type",
        "github_repo_users",
        "--conn-host",
        "https://api.github.com",
        "--conn-password",
        "install-test-token-5d2c",
        "--conn-extra",
        json.dumps({"tokens": "install-test-token-second-9a41", "reserve": 5}),
    )
    assert added.returncode == 0, added.stderr[-3000:]
    got = airflow(python, env, "connections", "get", conn_id, "-o", "json")
    assert got.returncode == 0, got.stderr[-3000:]
    [conn] = json.loads(got.stdout)
    return conn["conn_type"]


def test_connections_add_knows_the_type(provider_python, migrated):
    assert _added_type(provider_python, migrated, "github_installed") == "github_repo_users"
    # Without the provider, Airflow does not know the type and stores a generic connection:
    # the check above can fail.
    without = {**migrated, "PYTHONPATH": ""}
    assert _added_type(Path(sys.executable), without, "github_not_installed") == "generic"


def test_airflow_connections_test_runs_the_hooks_test(provider_python, migrated, emu_server_factory):
    from github_emulator import TokenConfig

    good, revoked = "install-conn-test-token-41f0", "install-conn-test-revoked-77aa"
    srv = emu_server_factory(
        tokens=[
            TokenConfig(name="installed", token=good, core_limit=1234),
            TokenConfig(name="revoked", token=revoked, valid=False),
        ]
    )

    def test(extra: dict) -> tuple[int, str]:
        conn = {"conn_type": "github_repo_users", "host": srv.url, "password": good, "extra": extra}
        env = {
            **migrated,
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW_CONN_GITHUB_EMULATED": json.dumps(conn),
        }
        proc = airflow(provider_python, env, "connections", "test", "github_emulated")
        return proc.returncode, proc.stdout + proc.stderr

    code, out = test({})
    assert code == 0 and "Connection success!" in out, out[-3000:]
    # Airflow prints the hook's message when the test fails
    _, out = test({"tokens": revoked})  # exit code 1 on Airflow 3, 0 on 2.11
    assert "Connection failed!" in out, out[-3000:]
    assert "1 of 2 token(s) work" in out
    # what GitHub (the emulator) reports: 1234 less the GET /user of the first test
    assert f"token {fingerprint(good)} (" in out and "core 1233 left, graphql 5000 left" in out
    assert f"token {fingerprint(revoked)}: rejected (401 Bad credentials)" in out
    assert good not in out and revoked not in out
