"""Quota windows, secondary limits, injected faults, stats and the request log."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests
from fixtures_emulator import *  # noqa: F403
from fixtures_emulator import EMU_TOKEN_COLLAB, EMU_TOKEN_PLAIN, emu_tokens

from github_emulator import SPECIAL_REPOS

pytestmark = pytest.mark.integration

EMPTY = SPECIAL_REPOS["empty"]


def test_primary_exhaustion_then_recovery_after_reset(emu_server_factory, emu_client) -> None:
    srv = emu_server_factory(tokens=emu_tokens(core_limit=3), window_seconds=2)
    s = emu_client()
    url = f"{srv.url}/repos/{EMPTY}"
    for left in (2, 1, 0):
        r = s.get(url)
        assert r.status_code == 200 and r.headers["x-ratelimit-remaining"] == str(left)
    r = s.get(url)
    assert r.status_code == 403
    assert r.json()["message"].startswith("API rate limit exceeded for user ID")
    assert r.headers["x-ratelimit-remaining"] == "0" and r.headers["x-ratelimit-used"] == "3"
    reset = int(r.headers["x-ratelimit-reset"])
    assert reset <= time.time() + 3
    # the quota is per token: the other token still works
    assert emu_client(EMU_TOKEN_PLAIN).get(url).status_code == 200
    # /rate_limit stays free even when exhausted
    assert s.get(f"{srv.url}/rate_limit").json()["resources"]["core"]["remaining"] == 0
    time.sleep(max(0.0, reset - time.time()) + 0.05)
    r = s.get(url)
    assert r.status_code == 200 and r.headers["x-ratelimit-remaining"] == "2"
    assert int(r.headers["x-ratelimit-reset"]) > reset
    stats = srv.stats()
    assert stats["primary_limit_hits"] == 1 and stats["requests_by_status"]["403"] == 1


def test_primary_status_429_and_manual_reset(emu_server_factory, emu_client) -> None:
    srv = emu_server_factory(tokens=emu_tokens(core_limit=1), primary_limit_status=429)
    s = emu_client()
    assert s.get(f"{srv.url}/repos/{EMPTY}").status_code == 200
    r = s.get(f"{srv.url}/repos/{EMPTY}")
    assert r.status_code == 429 and r.headers["x-ratelimit-remaining"] == "0"
    srv.set_faults(primary_limit_status=403)
    assert s.get(f"{srv.url}/repos/{EMPTY}").status_code == 403
    # reset over HTTP, one token by name
    assert requests.post(f"{srv.url}/_emulator/quota/reset", json={"token": "collab"}, timeout=10).json() == {
        "ok": True
    }
    assert s.get(f"{srv.url}/repos/{EMPTY}").status_code == 200
    srv.reset_quota()
    assert srv.stats()["tokens"]["collab"]["core"]["used"] == 0


def test_secondary_points_limit_with_retry_after(emu_server_factory, emu_client) -> None:
    srv = emu_server_factory(secondary_rest_points_per_minute=3, secondary_window_seconds=1.5)
    s = emu_client()
    url = f"{srv.url}/repos/{EMPTY}/forks"
    for _ in range(3):
        assert s.get(url).status_code == 200
    r = s.get(url)
    assert r.status_code == 403
    assert r.json()["message"].startswith("You have exceeded a secondary rate limit")
    retry = int(r.headers["retry-after"])
    assert 1 <= retry <= 2
    assert int(r.headers["x-ratelimit-remaining"]) > 0 and r.headers["x-ratelimit-used"] == "3"
    # limits are per endpoint family: profiles still answer
    assert s.get(f"{srv.url}/users/renovate%5Bbot%5D").status_code == 200
    time.sleep(retry)
    assert s.get(url).status_code == 200
    stats = srv.stats()
    assert stats["secondary_limit_hits"] == 1 and stats["tokens"]["collab"]["core"]["used"] == 5


def test_secondary_limit_on_graphql(emu_server_factory, emu_client) -> None:
    srv = emu_server_factory(secondary_graphql_points_per_minute=2, secondary_retry_after=7)
    s = emu_client()
    statuses = [s.post(f"{srv.url}/graphql", json={"query": "{ viewer { login } }"}) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 403]
    assert (
        statuses[2].headers["retry-after"] == "7" and statuses[2].headers["x-ratelimit-resource"] == "graphql"
    )
    assert srv.stats()["tokens"]["collab"]["graphql"]["used"] == 2


def test_secondary_concurrency_limit(emu_server_factory) -> None:
    srv = emu_server_factory(secondary_max_concurrent=2, latency_ms=300)
    results: list[int] = []
    lock = threading.Lock()

    def hit() -> None:
        r = requests.get(
            f"{srv.url}/repos/{EMPTY}", headers={"Authorization": f"Bearer {EMU_TOKEN_COLLAB}"}, timeout=10
        )
        with lock:
            results.append(r.status_code)

    threads = [threading.Thread(target=hit) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(200) >= 2 and results.count(403) >= 1
    assert srv.stats()["secondary_limit_hits"] == results.count(403)


def test_injected_502_costs_nothing(emu_server_factory, emu_client) -> None:
    srv = emu_server_factory(fault_502_rate=1.0)
    s = emu_client()
    r = s.get(f"{srv.url}/repos/{EMPTY}")
    assert r.status_code == 502 and r.headers["x-ratelimit-remaining"] == "5000"
    requests.post(f"{srv.url}/_emulator/faults", json={"fault_502_rate": 0.0}, timeout=10).raise_for_status()
    assert s.get(f"{srv.url}/repos/{EMPTY}").status_code == 200
    # a partial rate is reproducible from the seed
    srv.set_faults(fault_502_rate=0.5, fault_seed=42)
    first = [s.get(f"{srv.url}/repos/{EMPTY}").status_code for _ in range(12)]
    srv.set_faults(fault_seed=42)
    assert [s.get(f"{srv.url}/repos/{EMPTY}").status_code for _ in range(12)] == first
    assert 502 in first and 200 in first
    assert srv.stats()["faults_injected"] == 1 + 2 * first.count(502)
    r = requests.post(f"{srv.url}/_emulator/faults", json={"no_such_setting": 1}, timeout=10)
    assert r.status_code == 400


def test_revoke_over_http(emu_server, emu_client) -> None:
    s = emu_client()
    requests.post(
        f"{emu_server.url}/_emulator/faults", json={"token_valid": {"collab": False}}, timeout=10
    ).raise_for_status()
    assert s.get(f"{emu_server.url}/rate_limit").status_code == 401
    requests.post(
        f"{emu_server.url}/_emulator/faults", json={"token_valid": {"collab": True}}, timeout=10
    ).raise_for_status()
    assert s.get(f"{emu_server.url}/rate_limit").status_code == 200


def test_stats_and_log_use_token_names_only(emu_server, emu_client) -> None:
    s = emu_client()
    s.get(f"{emu_server.url}/repos/{EMPTY}")
    s.get(f"{emu_server.url}/repos/{SPECIAL_REPOS['missing']}")
    s.post(f"{emu_server.url}/graphql", json={"query": "{ viewer { login } }"})
    emu_client(None).get(f"{emu_server.url}/rate_limit")
    stats = requests.get(f"{emu_server.url}/_emulator/stats", timeout=10).json()
    assert stats == emu_server.stats()
    assert set(stats["tokens"]) == {"collab", "plain"}
    assert stats["tokens"]["collab"]["core"] == {
        **stats["tokens"]["collab"]["core"],
        "used": 2,
        "remaining": 4998,
    }
    assert stats["tokens"]["collab"]["graphql"]["used"] == 1
    assert stats["cost_by_token"]["collab"] == {"core": 2, "graphql": 1}
    assert stats["requests"] == 4 and stats["requests_by_status"] == {"200": 3, "404": 1}
    log = requests.get(f"{emu_server.url}/_emulator/log", timeout=10).json()
    assert log == emu_server.request_log()
    assert [(e["token"], e["method"], e["status"], e["resource"], e["cost"]) for e in log] == [
        ("collab", "GET", 200, "core", 1),
        ("collab", "GET", 404, "core", 1),
        ("collab", "POST", 200, "graphql", 1),
        (None, "GET", 200, "core", 0),
    ]
    assert log[0]["path"] == f"/repos/{EMPTY}" and isinstance(log[0]["t"], float)
    # A charged request logs what its window had left after the charge; a free one does not.
    assert [e.get("remaining") for e in log] == [4999, 4998, 4999, None]
    dumped = json.dumps([stats, log])
    assert EMU_TOKEN_COLLAB not in dumped and EMU_TOKEN_PLAIN not in dumped


def test_mutate_and_truth_over_http(emu_server_factory, emu_fresh_dataset, emu_client) -> None:
    srv = emu_server_factory(dataset=emu_fresh_dataset)
    name = emu_fresh_dataset.repo_names()[0]
    before = emu_client().get(f"{srv.url}/repos/{name}").json()["forks_count"]
    r = requests.post(
        f"{srv.url}/_emulator/mutate", json={"op": "add_forks", "full_name": name, "n": 2}, timeout=10
    )
    assert r.status_code == 200 and len(r.json()["result"]) == 2
    assert emu_client().get(f"{srv.url}/repos/{name}").json()["forks_count"] == before + 2
    bad = requests.post(
        f"{srv.url}/_emulator/mutate", json={"op": "add_forks", "full_name": "x/y", "n": 1}, timeout=10
    )
    assert bad.status_code == 400
    truth = requests.get(f"{srv.url}/_emulator/truth", params={"token": "plain"}, timeout=10).json()
    assert truth["repos"][name]["restricted"] == ["stargazers", "watchers"]
    assert all(not set(e["relations"]) & {"stargazers", "watchers"} for e in truth["repo_users"])
