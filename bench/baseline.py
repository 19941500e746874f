"""The naive way to collect the same data, as the yardstick for the product's quota use.

For every repository: REST lists of contributors, forks (their owners), stargazers and
watchers (subscribers), 100 per page, following the ``link`` headers; then one
``GET /users/{login}`` per distinct user for the profile. Sequential, plain ``requests``
with a timeout, no conditional requests, no GraphQL: what a straightforward script does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import requests

LISTS = {
    "contributors": ("contributors", lambda item: item),
    "forkers": ("forks", lambda item: item.get("owner")),
    "stargazers": ("stargazers", lambda item: item),
    "watchers": ("subscribers", lambda item: item),
}
TIMEOUT = (5.0, 30.0)


@dataclass
class BaselineResult:
    requests: int = 0
    list_requests: int = 0
    profile_requests: int = 0
    users: int = 0  # distinct accounts with a profile fetched
    links: int = 0  # (repo, user, relation) triples
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)


class Baseline:
    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers.update(
            {
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            }
        )
        self.result = BaselineResult()

    def _get(self, url: str) -> requests.Response:
        while True:
            resp = self.session.get(url, timeout=TIMEOUT)  # follows a renamed repo's 301
            self.result.requests += 1
            key = str(resp.status_code)
            self.result.statuses[key] = self.result.statuses.get(key, 0) + 1
            if resp.status_code in (403, 429) and "retry-after" in resp.headers:
                time.sleep(float(resp.headers["retry-after"]))  # secondary limit: the documented wait
                continue
            return resp

    def list_all(self, url: str) -> list[dict]:
        items: list[dict] = []
        next_url: str | None = url
        while next_url:
            resp = self._get(next_url)
            self.result.list_requests += 1
            if resp.status_code != 200:  # 204 empty, 404/451 gone or hidden, 403 too large
                break
            items.extend(resp.json())
            next_url = resp.links.get("next", {}).get("url")
        return items

    def run(self, repos: list[str], relations: list[str]) -> BaselineResult:
        t0 = time.perf_counter()
        logins: dict[int, str] = {}
        links: set[tuple[str, int, str]] = set()
        for repo in repos:
            for rel in relations:
                path, owner_of = LISTS[rel]
                for item in self.list_all(f"{self.base_url}/repos/{repo}/{path}?per_page=100"):
                    user = owner_of(item)
                    if user and user.get("id"):  # anonymous contributors have no account
                        logins[int(user["id"])] = user["login"]
                        links.add((repo, int(user["id"]), rel))
        profiles = 0
        for login in logins.values():
            resp = self._get(f"{self.base_url}/users/{login}")
            self.result.profile_requests += 1
            if resp.status_code == 200:
                resp.json()
                profiles += 1
        self.session.close()
        self.result.users = profiles
        self.result.links = len(links)
        self.result.seconds = time.perf_counter() - t0
        return self.result
