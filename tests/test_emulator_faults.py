"""Injected faults of the emulator: each must happen when enabled, never when disabled, be counted
in /_emulator/stats, cost quota as documented in app.py, and leave the control routes alone."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import support
from fixtures_emulator import *  # noqa: F403
from fixtures_emulator import EMU_TOKEN_COLLAB, emu_tokens

from github_emulator import (
    RENAMED_REPO_NEW_NAME,
    SPECIAL_REPOS,
    EmulatorConfig,
    EmulatorServer,
    node_id,
)
from github_emulator.accounting import FAULT_KINDS

pytestmark = pytest.mark.integration

EMPTY = SPECIAL_REPOS["empty"]
RENAMED = SPECIAL_REPOS["renamed"]
VIEWER = {"query": "{ viewer { login } }"}
INTERNAL_ERROR = (
    "Something went wrong while executing your query. Please include `{}` when reporting this issue."
)


def faults(srv) -> dict:
    return srv.stats()["faults"]


def used(srv, resource: str = "core") -> int:
    """What the "collab" token has spent of resource in the current window."""
    return srv.stats()["tokens"]["collab"][resource]["used"]


def post_faults(srv, **settings: object) -> requests.Response:
    return requests.post(f"{srv.url}/_emulator/faults", json=settings, timeout=10)


def listed_repo(ds, attr: str = "contributors", at_least: int = 11) -> str:
    """The current name of a plain repository whose `attr` list spans several pages of 5."""
    return support.listed_repo(ds, attr, at_least)


def links(resp: requests.Response) -> dict[str, int]:
    """rel -> page number of the link header."""
    return {rel: int(parse_qs(urlsplit(info["url"]).query)["page"][0]) for rel, info in resp.links.items()}


# ---------------------------------------------------------------------- defaults and control routes
def test_every_fault_is_off_by_default(emu_server, emu_client, emu_dataset) -> None:
    cfg = EmulatorConfig()
    assert cfg.fault_burst is None and cfg.fault_redirect_chain == 0 and not cfg.fault_redirect_loop
    assert cfg.fault_link_loop == () and cfg.fault_link_loop_to == "first"
    assert cfg.fault_slow_rate == cfg.fault_bad_json_rate == 0.0
    assert cfg.fault_graphql_error_rate == cfg.fault_graphql_partial_rate == 0.0
    s = emu_client()
    name = listed_repo(emu_dataset)
    last = None
    url = f"{emu_server.url}/repos/{name}/contributors?per_page=5"
    while url:  # the last page has no rel="next"
        last = s.get(url, timeout=10)
        assert last.status_code == 200 and isinstance(last.json(), list)
        url = last.links.get("next", {}).get("url")
    assert "next" not in last.links and "prev" in last.links
    r = s.get(f"{emu_server.url}/repos/{RENAMED}", allow_redirects=False, timeout=10)
    assert r.status_code == 301 and "/repositories/" in r.headers["location"]
    gql = s.post(
        f"{emu_server.url}/graphql",
        json={"query": '{ r: repository(owner: "%s", name: "%s") { id } }' % tuple(name.split("/"))},  # noqa: UP031
        timeout=10,
    )
    assert gql.status_code == 200 and gql.json()["data"]["r"]["id"]
    stats = emu_server.stats()
    assert stats["faults"] == dict.fromkeys(FAULT_KINDS, 0) and stats["faults_injected"] == 0
    assert all("faults" not in e for e in emu_server.request_log())


def test_settings_are_validated_and_nothing_changes_on_error(emu_server) -> None:
    bad = [
        {"fault_burst": {"status": 404, "count": 2}},
        {"fault_burst": {"status": 503, "count": -1}},
        {"fault_burst": {"status": 503, "count": 1, "extra": 1}},
        {"fault_burst": 503},
        {"fault_slow_rate": 1.5},
        {"fault_slow_seconds": -1},
        {"fault_bad_json_rate": "often"},
        {"fault_graphql_error_rate": True},
        {"fault_link_loop": [1, 2]},
        {"fault_link_loop_to": "last"},
        {"fault_redirect_chain": 2.5},
        {"fault_redirect_loop": "yes"},
        {"fault_slow_rate": 1.0, "fault_link_loop_to": "nowhere"},  # one bad value spoils all
    ]
    for settings in bad:
        r = post_faults(emu_server, **settings)
        assert r.status_code == 400, settings
        with pytest.raises(ValueError):
            emu_server.set_faults(**settings)
    assert emu_server.app.config.fault_slow_rate == 0.0
    with pytest.raises(ValueError):
        EmulatorConfig(fault_burst={"status": 418})
    # JSON forms are normalised: "*" and lists become tuples, a burst count defaults to 1
    post_faults(emu_server, fault_link_loop="*", fault_burst={"status": 500}).raise_for_status()
    assert emu_server.app.config.fault_link_loop == ("*",)
    assert emu_server.app.config.fault_burst == {"status": 500, "count": 1}
    assert EmulatorConfig(fault_link_loop=["a/b"]).fault_link_loop == ("a/b",)


def test_control_routes_are_never_faulted(emu_server_factory, emu_client) -> None:
    srv = emu_server_factory(
        fault_burst={"status": 503, "count": 1},
        fault_502_rate=1.0,
        fault_slow_rate=1.0,
        fault_slow_seconds=5,
        fault_bad_json_rate=1.0,
    )
    t0 = time.monotonic()
    for _ in range(3):
        r = requests.get(f"{srv.url}/_emulator/stats", timeout=10)
        assert r.status_code == 200 and r.json()["requests"] == 0
    assert requests.get(f"{srv.url}/_emulator/health", timeout=10).json() == {"ok": True}
    assert post_faults(srv, fault_slow_rate=0.0, fault_502_rate=0.0).status_code == 200
    assert time.monotonic() - t0 < 2
    # the burst was not spent by the control calls: the first API request still gets it
    assert emu_client().get(f"{srv.url}/repos/{EMPTY}", timeout=10).status_code == 503
    assert faults(srv)["burst"] == 1


# ---------------------------------------------------------------------- 1. 5xx bursts
@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_burst_answers_the_next_requests_then_stops(emu_server_factory, emu_client, status: int) -> None:
    srv = emu_server_factory(fault_burst={"status": status, "count": 3})
    s = emu_client()
    got = [s.get(f"{srv.url}/repos/{EMPTY}", timeout=10) for _ in range(5)]
    assert [r.status_code for r in got] == [status] * 3 + [200, 200]
    assert all(r.headers["x-ratelimit-remaining"] == "5000" for r in got[:3])  # a 5xx is free
    assert got[0].json()["message"] and got[0].headers["content-type"].startswith("application/json")
    stats = srv.stats()
    assert stats["faults"]["burst"] == 3 and stats["requests_by_status"][str(status)] == 3
    assert stats["tokens"]["collab"]["core"]["used"] == 2
    assert [e.get("faults") for e in srv.request_log()] == [["burst"]] * 3 + [None, None]


def test_burst_is_rearmed_at_runtime_and_hits_graphql_too(emu_server, emu_client) -> None:
    s = emu_client()
    assert s.get(f"{emu_server.url}/repos/{EMPTY}", timeout=10).status_code == 200
    post_faults(emu_server, fault_burst={"status": 503, "count": 2}).raise_for_status()
    r = s.post(f"{emu_server.url}/graphql", json=VIEWER, timeout=10)
    assert r.status_code == 503 and r.json()["message"].startswith("No server is currently available")
    assert s.get(f"{emu_server.url}/rate_limit", timeout=10).status_code == 503
    assert s.post(f"{emu_server.url}/graphql", json=VIEWER, timeout=10).status_code == 200
    assert used(emu_server, "graphql") == 1
    # setting the same burst again starts it afresh; count 0 or null cancels it
    emu_server.set_faults(fault_burst={"status": 504, "count": 5})
    assert s.get(f"{emu_server.url}/repos/{EMPTY}", timeout=10).status_code == 504
    emu_server.set_faults(fault_burst=None)
    assert s.get(f"{emu_server.url}/repos/{EMPTY}", timeout=10).status_code == 200
    assert faults(emu_server)["burst"] == 3


# ---------------------------------------------------------------------- 2. slow answers
def test_slow_answer_times_out_on_the_client_but_is_charged(emu_server_factory, emu_client, capfd) -> None:
    srv = emu_server_factory(fault_slow_rate=1.0, fault_slow_seconds=1.5)
    s = emu_client()
    t0 = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        s.get(f"{srv.url}/repos/{EMPTY}", timeout=0.4)
    assert time.monotonic() - t0 < 1.4
    # processed before being held back: charged and counted at once
    assert used(srv) == 1 and faults(srv)["slow"] == 1
    log = srv.request_log()
    assert log[-1]["status"] == 200 and log[-1]["cost"] == 1 and log[-1]["faults"] == ["slow"]
    time.sleep(1.6)  # let the held answer hit the closed connection
    srv.set_faults(fault_slow_rate=0.0)
    assert emu_client().get(f"{srv.url}/repos/{EMPTY}", timeout=5).status_code == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err and "ConnectionReset" not in err


def _reset_after(srv, request: bytes, wait: float) -> None:
    """Send request, then drop the connection with a TCP reset (SO_LINGER 0), as a killed client does."""
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    sock.sendall(request)
    time.sleep(wait)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_clients_that_reset_the_connection_are_ignored_quietly(emu_server_factory, emu_client, capfd) -> None:
    srv = emu_server_factory(fault_slow_rate=1.0, fault_slow_seconds=0.5)
    auth = f"Authorization: Bearer {EMU_TOKEN_COLLAB}\r\n".encode()
    get = b"GET /repos/" + EMPTY.encode() + b" HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n"
    # reset while the answer is held back, then while the server still reads a promised body
    _reset_after(srv, get, 0.1)
    _reset_after(srv, b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n" + auth + b"\r\n{", 0.1)
    time.sleep(0.8)
    srv.set_faults(fault_slow_rate=0.0)
    assert emu_client().get(f"{srv.url}/repos/{EMPTY}", timeout=5).status_code == 200
    assert faults(srv)["slow"] == 1
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err and "Connection" not in err


def test_a_held_request_blocks_no_other(emu_server_factory) -> None:
    srv = emu_server_factory(fault_slow_rate=1.0, fault_slow_seconds=2.0)
    headers = {"Authorization": f"Bearer {EMU_TOKEN_COLLAB}"}
    done: list[float] = []

    def held() -> None:
        t0 = time.monotonic()
        r = requests.get(f"{srv.url}/repos/{EMPTY}", headers=headers, timeout=10)
        assert r.status_code == 200  # a patient client gets the real answer
        done.append(time.monotonic() - t0)

    thread = threading.Thread(target=held)
    thread.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    post_faults(srv, fault_slow_rate=0.0).raise_for_status()
    r = requests.get(f"{srv.url}/repos/{EMPTY}", headers=headers, timeout=10)
    assert r.status_code == 200 and time.monotonic() - t0 < 1.0
    thread.join(timeout=10)
    assert done and done[0] >= 1.9
    assert faults(srv)["slow"] == 1 and used(srv) == 2


def test_stopping_the_server_releases_held_requests(emu_dataset, emu_client) -> None:
    srv = EmulatorServer(
        emu_dataset, EmulatorConfig(tokens=emu_tokens(), fault_slow_rate=1.0, fault_slow_seconds=60)
    ).start()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(emu_client().get(f"{srv.url}/repos/{EMPTY}", timeout=30).status_code)
    )
    thread.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    srv.stop()
    thread.join(timeout=10)
    assert not thread.is_alive() and result == [200] and time.monotonic() - t0 < 5


# ---------------------------------------------------------------------- 3. truncated or invalid JSON
def test_bad_json_mixes_truncated_and_html_bodies_with_good_headers(
    emu_server_factory, emu_client, emu_dataset
) -> None:
    srv = emu_server_factory(fault_bad_json_rate=1.0, fault_seed=3)
    s = emu_client()
    name = listed_repo(emu_dataset)
    url = f"{srv.url}/repos/{name}/contributors?per_page=5"
    bodies = []
    for _ in range(12):
        r = s.get(url, timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        assert r.headers["x-ratelimit-resource"] == "core" and "x-ratelimit-remaining" in r.headers
        assert int(r.headers["content-length"]) == len(r.content)  # complete at the HTTP level
        with pytest.raises(ValueError):
            r.json()
        bodies.append(r.content)
    srv.set_faults(fault_bad_json_rate=0.0)
    good = s.get(url, timeout=10).content
    html = [b for b in bodies if b.startswith(b"<!DOCTYPE html>")]
    cut = [b for b in bodies if not b.startswith(b"<!DOCTYPE html>")]
    assert html and cut  # both kinds, from the seed
    assert all(0 < len(b) < len(good) and good.startswith(b) for b in cut)
    assert all(b"Unicorn!" in b for b in html)
    stats = srv.stats()
    assert stats["faults"]["bad_json_truncated"] == len(cut)
    assert stats["faults"]["bad_json_html"] == len(html)
    assert stats["tokens"]["collab"]["core"]["used"] == 13  # processed, so charged


def test_bad_json_hits_graphql_but_only_answers_with_a_body(emu_server_factory, emu_client) -> None:
    srv = emu_server_factory(fault_bad_json_rate=1.0)
    s = emu_client()
    r = s.post(f"{srv.url}/graphql", json=VIEWER, timeout=10)
    assert r.status_code == 200 and r.headers["x-ratelimit-resource"] == "graphql"
    with pytest.raises(ValueError):
        r.json()
    assert used(srv, "graphql") == 1
    # errors, empty bodies and HEAD keep their form
    assert s.get(f"{srv.url}/repos/{SPECIAL_REPOS['missing']}", timeout=10).json()["message"] == "Not Found"
    assert s.get(f"{srv.url}/repos/{EMPTY}/contributors", timeout=10).status_code == 204
    assert s.head(f"{srv.url}/repos/{EMPTY}", timeout=10).status_code == 200
    stats = srv.stats()
    assert stats["faults"]["bad_json_truncated"] + stats["faults"]["bad_json_html"] == 1


# ---------------------------------------------------------------------- 4. GraphQL errors with 200
def test_graphql_internal_error_has_githubs_wording_and_is_charged(emu_server_factory, emu_client) -> None:
    srv = emu_server_factory(fault_graphql_error_rate=1.0)
    s = emu_client()
    r = s.post(f"{srv.url}/graphql", json=VIEWER, timeout=10)
    assert r.status_code == 200
    assert r.json() == {
        "data": None,
        "errors": [{"message": INTERNAL_ERROR.format(r.headers["x-github-request-id"])}],
    }
    assert r.headers["x-ratelimit-used"] == "1" and used(srv, "graphql") == 1
    # REST is not GraphQL; a query refused before execution is answered as usual
    assert s.get(f"{srv.url}/repos/{EMPTY}", timeout=10).json()["full_name"] == EMPTY
    bad = s.post(f"{srv.url}/graphql", json={"query": "{ viewer { nope } }"}, timeout=10).json()
    assert "nope" in bad["errors"][0]["message"]
    assert faults(srv)["graphql_error"] == 1 and used(srv, "graphql") == 1
    srv.set_faults(fault_graphql_error_rate=0.0)
    assert s.post(f"{srv.url}/graphql", json=VIEWER, timeout=10).json()["data"]["viewer"]["login"]
    assert faults(srv)["graphql_error"] == 1


def test_graphql_partial_nulls_one_field_with_service_unavailable(
    emu_server_factory, emu_client, emu_dataset
) -> None:
    srv = emu_server_factory(fault_graphql_partial_rate=1.0)
    s = emu_client()
    (o1, n1), (o2, n2) = (n.split("/") for n in emu_dataset.repo_names()[:2])
    query = (
        f'{{ rateLimit {{ cost }}\n  a: repository(owner: "{o1}", name: "{n1}") {{ nameWithOwner }}\n'
        f'  b: repository(owner: "{o2}", name: "{n2}") {{ nameWithOwner }} }}'
    )
    body = s.post(f"{srv.url}/graphql", json={"query": query}, timeout=10).json()
    assert body["data"] == {"rateLimit": {"cost": 1}, "a": None, "b": {"nameWithOwner": f"{o2}/{n2}"}}
    assert body["errors"] == [
        {
            "type": "SERVICE_UNAVAILABLE",
            "path": ["a"],
            "locations": [{"line": 2, "column": 3}],
            "message": "timedout",
        }
    ]
    # a non-null list (nodes) loses one item, not the list
    people = [uid for uid, u in emu_dataset.truth()["users"].items() if u["type"] == "User"]
    ids = [node_id("User", uid) for uid in people[:3]]
    q = "query($ids: [ID!]!) { nodes(ids: $ids) { ... on User { login } } }"
    nodes = s.post(f"{srv.url}/graphql", json={"query": q, "variables": {"ids": ids}}, timeout=10).json()
    assert nodes["data"]["nodes"][0] is None and all(nodes["data"]["nodes"][1:])
    assert nodes["errors"][0]["path"] == ["nodes", 0]
    assert nodes["errors"][0]["type"] == "SERVICE_UNAVAILABLE"
    # viewer is non-null: nulling it would null all of data, so that query is left alone
    assert "errors" not in s.post(f"{srv.url}/graphql", json=VIEWER, timeout=10).json()
    assert faults(srv)["graphql_partial"] == 2 and used(srv, "graphql") == 3


# ---------------------------------------------------------------------- 5. link loops
def test_link_loop_sends_the_last_page_back(emu_server_factory, emu_client, emu_dataset) -> None:
    name = listed_repo(emu_dataset)
    other = next(n for n in emu_dataset.repo_names() if n not in (name, EMPTY) and "/" in n)
    srv = emu_server_factory(fault_link_loop=[name])
    s = emu_client()
    first = s.get(f"{srv.url}/repos/{name}/contributors?per_page=5", timeout=10)
    last_page = links(first)["last"]
    assert links(first)["next"] == 2  # pages before the last are untouched
    last = s.get(first.links["last"]["url"], timeout=10)
    assert links(last)["next"] == 1 and links(last)["prev"] == last_page - 1
    # a client that follows rel="next" blindly comes back to a page it has seen
    seen, url = [], first.url
    for _ in range(last_page + 2):
        r = s.get(url, timeout=10)
        page = int(parse_qs(urlsplit(r.url).query).get("page", ["1"])[0])
        if page in seen:
            break
        seen.append(page)
        url = r.links["next"]["url"]
    else:
        pytest.fail("no loop")
    assert seen == list(range(1, last_page + 1))
    srv.set_faults(fault_link_loop_to="prev")
    assert links(s.get(first.links["last"]["url"], timeout=10))["next"] == last_page - 1
    # other repositories are not affected
    r = s.get(f"{srv.url}/repos/{other}/forks?per_page=100", timeout=10)
    assert "next" not in r.links
    assert faults(srv)["link_loop"] == 3


def test_link_loop_star_covers_every_list_and_id_urls(emu_server_factory, emu_client, emu_dataset) -> None:
    srv = emu_server_factory(fault_link_loop="*")
    s = emu_client()
    for attr, sub in (("forks", "forks"), ("stars", "stargazers"), ("watchers", "subscribers")):
        name = listed_repo(emu_dataset, attr, at_least=6)
        repo, _ = emu_dataset.lookup_full_name(name)
        for url in (f"{srv.url}/repos/{name}/{sub}", f"{srv.url}/repositories/{repo.id}/{sub}"):
            last = s.get(url, params={"per_page": 5}, timeout=10).links["last"]["url"]
            r = s.get(last, timeout=10)
            assert r.status_code == 200 and links(r)["next"] == 1, (sub, url)
    assert faults(srv)["link_loop"] == 6
    srv.set_faults(fault_link_loop=[])
    assert "next" not in s.get(last, timeout=10).links and faults(srv)["link_loop"] == 6


# ---------------------------------------------------------------------- 6. redirects
def test_repo_renamed_twice_still_answers_one_301(emu_server_factory, emu_fresh_dataset, emu_client) -> None:
    ds = emu_fresh_dataset
    srv = emu_server_factory(dataset=ds)
    owner = RENAMED_REPO_NEW_NAME.split("/")[0]
    second, third = f"{owner}/second-name", "other-owner-x/third-name"
    for old, new in ((RENAMED_REPO_NEW_NAME, second), (second, third)):
        r = requests.post(
            f"{srv.url}/_emulator/mutate",
            json={"op": "rename_repo", "old_full_name": old, "new_full_name": new},
            timeout=10,
        )
        assert r.status_code == 200, r.text
    repo, _ = ds.lookup_full_name(third)
    s = emu_client()
    for old in (RENAMED, RENAMED_REPO_NEW_NAME, second):
        r = s.get(f"{srv.url}/repos/{old}/forks?per_page=3", allow_redirects=False, timeout=10)
        assert r.status_code == 301
        assert r.headers["location"] == f"{srv.url}/repositories/{repo.id}/forks?per_page=3"
        followed = s.get(f"{srv.url}/repos/{old}", timeout=10)
        assert len(followed.history) == 1 and followed.json()["full_name"] == third
    assert faults(srv)["redirect_chain"] == faults(srv)["redirect_loop"] == 0


def test_redirect_chain_of_n_hops(emu_server_factory, emu_client, emu_dataset) -> None:
    srv = emu_server_factory(fault_redirect_chain=3)
    repo, _ = emu_dataset.lookup_full_name(RENAMED)
    s = emu_client()
    url, hops = f"{srv.url}/repos/{RENAMED}/contributors?per_page=5&anon=1", []
    while True:
        r = s.get(url, allow_redirects=False, timeout=10)
        if r.status_code != 301:
            break
        assert r.json()["url"] == r.headers["location"]
        url = r.headers["location"]
        hops.append(url)
    assert r.status_code == 200 and len(r.json()) == 5
    assert len(hops) == len(set(hops)) == 3
    assert hops[-1] == f"{srv.url}/repositories/{repo.id}/contributors?per_page=5&anon=1"
    assert all(h.endswith("/contributors?per_page=5&anon=1") for h in hops)
    stats = srv.stats()
    assert stats["faults"]["redirect_chain"] == 3
    assert stats["tokens"]["collab"]["core"]["used"] == 4  # every 301 is a request GitHub processed
    followed = s.get(f"{srv.url}/repos/{RENAMED}", timeout=10)
    assert len(followed.history) == 3 and followed.json()["full_name"] == RENAMED_REPO_NEW_NAME
    # switched off mid-chain, an intermediate URL still leads out; 0 and 1 mean GitHub's single 301
    mid = hops[0]
    srv.set_faults(fault_redirect_chain=1)
    r = s.get(mid, allow_redirects=False, timeout=10)
    assert r.headers["location"].startswith(f"{srv.url}/repositories/{repo.id}")
    assert len(s.get(f"{srv.url}/repos/{RENAMED}", timeout=10).history) == 1
    # current names and unknown repositories never redirect
    assert (
        s.get(f"{srv.url}/repos/{RENAMED_REPO_NEW_NAME}", allow_redirects=False, timeout=10).status_code
        == 200
    )
    assert s.get(f"{srv.url}/repos/{RENAMED_REPO_NEW_NAME}~hop1", timeout=10).status_code == 404


def test_redirect_loop_trips_the_client_cap(emu_server_factory, emu_client) -> None:
    srv = emu_server_factory(fault_redirect_loop=True)
    s = emu_client()
    s.max_redirects = 7
    with pytest.raises(requests.TooManyRedirects):
        s.get(f"{srv.url}/repos/{RENAMED}", timeout=10)
    a = f"{srv.url}/repos/{RENAMED}"
    b = s.get(a, allow_redirects=False, timeout=10).headers["location"]
    assert b != a and s.get(b, allow_redirects=False, timeout=10).headers["location"] == a
    assert faults(srv)["redirect_loop"] == 8 + 2
    post_faults(srv, fault_redirect_loop=False).raise_for_status()
    assert s.get(b, timeout=10).json()["full_name"] == RENAMED_REPO_NEW_NAME  # the way out
    assert len(s.get(a, timeout=10).history) == 1


# ---------------------------------------------------------------------- 7. renamed between two runs
def test_repo_renamed_between_runs(emu_server_factory, emu_fresh_dataset, emu_client) -> None:
    ds = emu_fresh_dataset
    srv = emu_server_factory(dataset=ds)
    s = emu_client()
    old = next(
        n
        for n in ds.repo_names()
        if ds.lookup_full_name(n)[0] is not None and n not in SPECIAL_REPOS.values()
    )
    repo, _ = ds.lookup_full_name(old)
    new = f"{old.split('/')[0]}/renamed-between-runs"
    q = """query($o: String!, $n: String!, $f: Boolean = true) {
             repository(owner: $o, name: $n, followRenames: $f) { nameWithOwner databaseId } }"""

    def gql(full_name: str, follow: bool = True) -> dict:
        o, n = full_name.split("/")
        payload = {"query": q, "variables": {"o": o, "n": n, "f": follow}}
        return s.post(f"{srv.url}/graphql", json=payload, timeout=10).json()

    assert gql(old)["data"]["repository"] == {"nameWithOwner": old, "databaseId": repo.id}  # run 1
    r = requests.post(
        f"{srv.url}/_emulator/mutate",
        json={"op": "rename_repo", "old_full_name": old, "new_full_name": new},
        timeout=10,
    )
    assert r.json() == {"ok": True, "result": None}
    # run 2 still asks for the old name. GraphQL's repository(followRenames: true by default,
    # docs.github.com/en/graphql/reference/repos#repository) resolves it to the renamed repo.
    assert gql(old)["data"]["repository"] == {"nameWithOwner": new, "databaseId": repo.id}
    refused = gql(old, follow=False)
    assert refused["data"]["repository"] is None and refused["errors"][0]["type"] == "NOT_FOUND"
    rest = s.get(f"{srv.url}/repos/{old}", allow_redirects=False, timeout=10)
    assert rest.status_code == 301 and rest.headers["location"] == f"{srv.url}/repositories/{repo.id}"
    truth = ds.truth(repos=[old, new])["repos"]
    assert truth[old] == {**truth[old], "repo_id": repo.id, "full_name": new, "status": "moved"}
    assert truth[new] == {**truth[new], "repo_id": repo.id, "full_name": new, "status": "ok"}
    over_http = requests.get(f"{srv.url}/_emulator/truth", params={"token": "collab"}, timeout=10).json()
    assert over_http["repos"][old]["full_name"] == new and over_http["repos"][old]["repo_id"] == repo.id


# ---------------------------------------------------------------------- determinism
def test_random_faults_repeat_with_the_seed(emu_server_factory, emu_client) -> None:
    srv = emu_server_factory(
        fault_slow_rate=0.3,
        fault_slow_seconds=0,
        fault_bad_json_rate=0.3,
        fault_graphql_error_rate=0.3,
        fault_graphql_partial_rate=0.3,
        fault_seed=11,
    )
    s = emu_client()
    o, n = EMPTY.split("/")
    query = {"query": f'{{ r: repository(owner: "{o}", name: "{n}") {{ id }} }}'}

    def run() -> list:
        start = len(srv.request_log())
        for i in range(24):
            if i % 2:
                s.post(f"{srv.url}/graphql", json=query, timeout=10)
            else:
                s.get(f"{srv.url}/repos/{EMPTY}", timeout=10)
        return [e.get("faults", []) for e in srv.request_log()[start:]]

    first = run()
    srv.set_faults(fault_seed=11)
    assert run() == first
    kinds = {k for f in first for k in f}
    assert {"slow", "graphql_error", "graphql_partial"} <= kinds
    assert kinds & {"bad_json_truncated", "bad_json_html"}
    assert [] in first  # and some requests got none
    counted = srv.stats()["faults"]
    assert sum(counted.values()) == srv.stats()["faults_injected"] == 2 * sum(map(len, first))
    json.dumps(srv.stats())  # stats stay JSON


def test_the_request_log_names_graphql_pages_and_refused_limits(emu_server_factory):
    """The fault tests count pages fetched twice and secondary-limit answers from the log."""
    import requests

    from github_emulator import TokenConfig

    srv = emu_server_factory(
        tokens=[TokenConfig(name="t", token="log-test-token", collaborator_repos=("*",))],
        secondary_graphql_points_per_minute=1,
    )
    query = (
        "query($o: String!, $n: String!, $a: String) { repository(owner: $o, name: $n) {"
        " forks(first: 5, after: $a) { totalCount } watchers(first: 5) { totalCount } } }"
    )
    owner, name = srv.app.ds.repo_names()[0].split("/")
    h = {"Authorization": "Bearer log-test-token"}
    body = {"query": query, "variables": {"o": owner, "n": name, "a": None}}
    assert requests.post(srv.url + "/graphql", json=body, headers=h, timeout=10).status_code == 200
    refused = requests.post(srv.url + "/graphql", json=body, headers=h, timeout=10)
    assert refused.status_code == 403
    first, second = srv.request_log()[-2:]
    assert first["pages"] == [f"{owner}/{name}:forks:None:first5", f"{owner}/{name}:watchers:None:first5"]
    assert second["limit"] == "secondary" and "pages" not in second
