"""Throughput at benchmark scale and correctness under concurrent requests and mutations."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from fixtures_emulator import *  # noqa: F403
from fixtures_emulator import EMU_TOKEN_COLLAB, EMU_TOKEN_PLAIN

from github_emulator import PRESETS, build_dataset

pytestmark = pytest.mark.integration

PROFILES = """query($ids: [ID!]!) { nodes(ids: $ids) { ... on User { login name company location bio email
  websiteUrl twitterUsername createdAt updatedAt followers { totalCount } following { totalCount } } } }"""


def test_benchmark_scale_throughput(emu_server_factory, emu_client) -> None:
    ds = build_dataset(PRESETS["bench"])
    srv = emu_server_factory(dataset=ds)
    repo = max(
        (ds.lookup_full_name(n)[0] for n in ds.repo_names() if ds.lookup_full_name(n)[0]),
        key=lambda r: len(r.stars),
    )
    s = emu_client()
    start = time.perf_counter()
    url = f"{srv.url}/repos/{ds.full_name(repo)}/stargazers?per_page=100"
    users = 0
    for _ in range(60):  # 60 list pages + 60 batches of 100 full profiles = 6,000 users
        r = s.get(url)
        ids = [u["node_id"] for u in r.json()]
        body = s.post(f"{srv.url}/graphql", json={"query": PROFILES, "variables": {"ids": ids}}).json()
        users += sum(1 for n in body["data"]["nodes"] if n)
        url = r.links["next"]["url"]
    elapsed = time.perf_counter() - start
    assert users == 6000
    # 120 requests; 2,000 such requests (100k users) must stay well under a minute
    assert elapsed / 120 * 2000 < 45, f"{elapsed:.1f}s for 120 requests"


def test_concurrent_requests_and_mutations(emu_server_factory, emu_fresh_dataset) -> None:
    ds = emu_fresh_dataset
    srv = emu_server_factory(dataset=ds)
    names = ds.repo_names()[:4]
    statuses: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def reader(token: str) -> None:
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {token}"
        local = []
        for i in range(40):
            name = names[i % len(names)]
            local.append(
                s.get(f"{srv.url}/repos/{name}/forks", params={"per_page": 100}, timeout=10).status_code
            )
            owner, repo = name.split("/")
            q = '{ repository(owner: "%s", name: "%s") { forks(first: 50) { nodes { owner { login } } } } }'
            local.append(
                s.post(f"{srv.url}/graphql", json={"query": q % (owner, repo)}, timeout=10).status_code
            )
        with lock:
            statuses.extend(local)

    def mutator() -> None:
        while not stop.is_set():
            for name in names:
                ds.add_forks(name, 1)
                ds.add_stargazers(name, 1)
            time.sleep(0.005)

    m = threading.Thread(target=mutator)
    m.start()
    readers = [threading.Thread(target=reader, args=(t,)) for t in (EMU_TOKEN_COLLAB, EMU_TOKEN_PLAIN) * 2]
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    stop.set()
    m.join()
    assert statuses and set(statuses) == {200}
    stats = srv.stats()
    assert stats["requests"] == len(statuses)
    assert (
        stats["tokens"]["collab"]["core"]["used"] + stats["tokens"]["plain"]["core"]["used"]
        == len(statuses) // 2
    )
