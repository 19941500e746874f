"""The emulator's command line: startup line, token parsing, secrets kept out of output."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from github_emulator import SPECIAL_REPOS, parse_token_list, parse_token_spec

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.unit
def test_token_spec_parsing() -> None:
    t = parse_token_spec("t1=ghp_abc:collab=owner/a,owner/b:core=100:graphql=50:scopes=repo+read:user")
    assert (t.name, t.token, t.core_limit, t.graphql_limit) == ("t1", "ghp_abc", 100, 50)
    assert t.collaborator_repos == ("owner/a", "owner/b") and t.scopes == ("repo", "read:user")
    assert parse_token_spec("x=y").collaborator_repos == () and parse_token_spec(
        "x=y:collab=*"
    ).collaborator_repos == ("*",)
    assert parse_token_spec("x=y:valid=false").valid is False
    many = parse_token_list("a=1:collab=o/a,o/b,b=2;c=3:core=7\nd=4")
    assert [(t.name, t.token) for t in many] == [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]
    assert many[0].collaborator_repos == ("o/a", "o/b") and many[2].core_limit == 7
    assert parse_token_list("") == []
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_token_spec("just-a-value")


@pytest.mark.integration
def test_cli_serves_and_never_prints_tokens(tmp_path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT / "plugins"),
        "EMULATOR_TOKENS": "envtok=secret-from-env-42:collab=*",
    }
    cmd = [
        sys.executable,
        "-m",
        "github_emulator",
        "--port",
        "0",
        "--preset",
        "demo",
        "--seed",
        "5",
        "--n-repos",
        "3",
        "--window-seconds",
        "60",
        "--token",
        "cli=secret-from-cli-17:core=10",
    ]
    err_path = tmp_path / "stderr.txt"
    with err_path.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        try:
            line = proc.stdout.readline().strip()
            assert line.startswith("emulator listening on http://127.0.0.1:")
            url = line.rsplit(" ", 1)[1]
            r = requests.get(
                f"{url}/rate_limit", headers={"Authorization": "Bearer secret-from-cli-17"}, timeout=5
            )
            assert r.json()["resources"]["core"]["limit"] == 10
            r = requests.get(f"{url}/_emulator/repos", timeout=5)
            assert len(r.json()) == 3 + len(SPECIAL_REPOS)  # ordinary repos plus the special ones
            r = requests.get(
                f"{url}/rate_limit", headers={"Authorization": "token secret-from-env-42"}, timeout=5
            )
            assert r.status_code == 200
            assert set(requests.get(f"{url}/_emulator/stats", timeout=5).json()["tokens"]) == {
                "cli",
                "envtok",
            }
        finally:
            proc.terminate()
            out, _ = proc.communicate(timeout=10)
    output = line + out + err_path.read_text()
    assert "secret-from-cli-17" not in output and "secret-from-env-42" not in output
    assert proc.returncode == 0


@pytest.mark.unit
def test_cli_help_documents_token_syntax() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "plugins")}
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "github_emulator", "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert "EMULATOR_TOKENS" in out and "collab=" in out and time.perf_counter() - start < 20
