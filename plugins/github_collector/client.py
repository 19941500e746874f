"""GitHub REST and GraphQL client that lives inside the quota.

- Every request leases one token from the shared pool (one request in flight per token,
  the token with most quota first, never below its reserve) and writes the response's
  rate-limit headers back to the shared quota records.
- GitHub's documented procedure for limits: primary exhaustion moves to another token or
  raises ``QuotaExhausted`` with the earliest reset; a secondary limit obeys ``retry-after``
  (else waits 60 s), backs off exponentially and gives up after a few tries. No wait inside
  a worker is longer than ``max_inline_wait``: longer ones are raised for the caller to defer.
- REST GETs are conditional (ETag cache in Redis): a 304 costs nothing.
- 5xx, timeouts and unreadable bodies are retried with backoff; a GraphQL 502/504 is raised
  as ``GraphQLTimeout`` so the caller can ask for smaller pages.

Tokens never leave this module except in the Authorization header; everything else names
them by fingerprint.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from github_collector.errors import (
    ConfigError,
    GitHubUnavailable,
    GraphQLTimeout,
    QuotaExhausted,
    TokenRejected,
    TooManyRedirects,
)
from github_collector.etag_cache import EtagCache
from github_collector.quota import QuotaState, QuotaStore, fingerprint

log = logging.getLogger(__name__)

API_VERSION = "2022-11-28"
USER_AGENT = "github-repo-users-airflow"
REDIRECTS = (301, 302, 307, 308)
MAX_REDIRECTS = 5
TRANSIENT = (500, 502, 503, 504)


def derive_graphql_url(base_url: str) -> str:
    """api.github.com -> /graphql; GitHub Enterprise https://host/api/v3 -> /api/graphql."""
    base = base_url.rstrip("/")
    if base.endswith("/api/v3"):
        return base[: -len("/v3")] + "/graphql"
    return base + "/graphql"


def auth_headers(token: str, accept: str = "application/vnd.github+json") -> dict[str, str]:
    """The only place a token goes: the Authorization header."""
    return {
        "Authorization": f"Bearer {token}",
        "Accept": accept,
        "User-Agent": USER_AGENT,
        "X-GitHub-Api-Version": API_VERSION,
    }


def validate_base_url(base_url: str) -> str:
    parts = urlsplit(base_url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(
            f"GitHub base URL {base_url!r} is not an http(s) URL such as https://api.github.com "
            "or https://ghe.example.com/api/v3"
        )
    if parts.username or parts.password:
        raise ConfigError("GitHub base URL must not embed credentials; put the token in the password field")
    return base_url.rstrip("/")


@dataclass
class RestResponse:
    status: int
    data: Any
    url: str
    next_url: str | None
    headers: dict[str, str]
    redirects: list[str] = field(default_factory=list)
    not_modified: bool = False
    token: str = ""  # fingerprint of the token that answered

    @property
    def message(self) -> str:
        return str(self.data.get("message", "")) if isinstance(self.data, dict) else ""


@dataclass
class GraphQLResponse:
    data: dict | None
    errors: list[dict]
    cost: int
    token: str
    with_email: bool


@dataclass
class ClientStats:
    requests: int = 0
    core_spent: int = 0
    graphql_spent: int = 0
    not_modified: int = 0
    secondary_hits: int = 0
    retries: int = 0
    rejected_tokens: set[str] = field(default_factory=set)
    statuses: Counter = field(default_factory=Counter)


class GitHubClient:
    def __init__(
        self,
        base_url: str,
        tokens: list[str],
        quota: QuotaStore,
        etags: EtagCache | None = None,
        *,
        timeout: tuple[float, float] = (5.0, 30.0),
        max_attempts: int = 5,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        max_inline_wait: float = 30.0,
        secondary_default_wait: float = 60.0,
        max_secondary_tries: int = 5,
        reservation_id: str | None = None,
        session: requests.Session | None = None,
    ) -> None:
        if not tokens:
            raise ConfigError(
                "no GitHub token configured: set the connection's password (and extra 'tokens')"
            )
        self.base_url = validate_base_url(base_url)
        self.graphql_url = derive_graphql_url(self.base_url)
        # Deduplicate while keeping order: the same token twice would break one-request-per-token.
        self._tokens: dict[str, str] = {}
        for t in tokens:
            t = (t or "").strip()
            if t:
                self._tokens.setdefault(fingerprint(t), t)
        if not self._tokens:
            raise ConfigError("every configured GitHub token is empty")
        self.fingerprints = list(self._tokens)
        self.quota = quota
        self.etags = etags
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_inline_wait = max_inline_wait
        self.secondary_default_wait = secondary_default_wait
        self.max_secondary_tries = max_secondary_tries
        self.reservation_id = reservation_id
        self.session = session or _session(self.base_url)
        self.stats = ClientStats()
        self._no_email: set[str] = set()
        self._seeded = False

    def __repr__(self) -> str:  # never show tokens
        return f"GitHubClient({self.base_url!r}, tokens={self.fingerprints})"

    # -- quota records ------------------------------------------------------------------------
    def ensure_quota_records(self, refresh_stale: bool = False) -> None:
        """Seed missing quota records from GET /rate_limit, which costs no quota.

        With ``refresh_stale``, also re-read tokens whose recorded window has ended, so a
        decision about the current window is made on its real numbers and reset time.
        """
        if self._seeded and not refresh_stale:
            return
        todo = set(self.quota.missing(self.fingerprints))
        if refresh_stale:
            now = time.time()
            for fp, states in self.quota.snapshot(self.fingerprints).items():
                if any(st is None or st.reset <= now for st in states.values()):
                    todo.add(fp)
        for fp in self.fingerprints:
            if fp in todo and not self.quota.is_rejected(fp):
                self.refresh_rate_limit(fp)
        self._seeded = True

    def refresh_rate_limit(self, fp: str) -> None:
        """Read a token's quota from GET /rate_limit (free); a few tries, then carry on without.

        Without a record the token is still used: the first response's headers fill it in.
        The request holds the token's lease like any other: workers in other processes (and
        on other machines) may be sending with the same token at this very moment.
        """
        for attempt in range(1, self.max_attempts + 1):
            lease = self.quota.lease_token(fp)
            if lease is None:
                log.warning(
                    "token %s stayed busy or cooling down; going on without its /rate_limit record", fp
                )
                return
            try:
                resp = self.session.get(
                    self.base_url + "/rate_limit", headers=self._headers(fp), timeout=self.timeout
                )
            except requests.RequestException as exc:
                problem = type(exc).__name__
            else:
                if resp.status_code == 401:
                    self._reject(fp)
                    return
                if resp.status_code == 200:
                    try:
                        body = resp.json()
                    except ValueError:
                        body = None
                    if isinstance(body, dict):
                        self._store_rate_limit(fp, body.get("resources") or {})
                        return
                    problem = "an unreadable body"
                elif resp.status_code in TRANSIENT:
                    problem = f"HTTP {resp.status_code}"
                else:
                    log.warning("GET /rate_limit for token %s answered %s", fp, resp.status_code)
                    return
            finally:
                self.quota.release(lease)  # after the record is stored, as in _send
            if attempt < self.max_attempts:
                self._backoff(attempt)
        log.warning("GET /rate_limit for token %s failed (%s); going on without its record", fp, problem)

    def _store_rate_limit(self, fp: str, resources: dict) -> None:
        for name in ("core", "graphql"):
            r = resources.get(name)
            if r:
                self.quota.set_state(
                    fp,
                    name,
                    QuotaState(int(r["limit"]), int(r["remaining"]), int(r.get("used", 0)), int(r["reset"])),
                )

    # -- plumbing -------------------------------------------------------------------------------
    def _headers(self, fp: str, accept: str = "application/vnd.github+json") -> dict[str, str]:
        return auth_headers(self._tokens[fp], accept)

    def _reject(self, fp: str) -> None:
        self.quota.mark_rejected(fp)
        self.stats.rejected_tokens.add(fp)
        log.error("%s", TokenRejected(fp))

    def _lease(
        self, resource: str, cost: int, prefer: str | None = None, exclude: frozenset[str] = frozenset()
    ):
        """Lease a token, waiting briefly while all are busy or about to be usable again."""
        self.ensure_quota_records()
        busy_since = next_reap = time.monotonic()
        inline_waits = 0
        while True:
            try:
                fps = [fp for fp in self.fingerprints if fp not in exclude] if exclude else self.fingerprints
                lease = self.quota.lease(fps, resource, cost, prefer=prefer)
            except QuotaExhausted as exc:
                wait = exc.reset_at - time.time()
                inline_waits += 1
                if wait > self.max_inline_wait or inline_waits > 20:
                    raise
                time.sleep(max(wait, 0) + 0.5)  # +0.5 s: reset headers are whole seconds
                continue
            if lease is not None:
                return lease
            waited = time.monotonic() - busy_since
            if waited > 300:
                raise GitHubUnavailable("every usable token stayed leased for 5 minutes")
            if waited > 1 and time.monotonic() >= next_reap:
                # A worker killed mid-request leaves its lease until the TTL; free it if it
                # was on this host, so a retry resumes at once instead of waiting it out.
                self.quota.reap_dead_leases(fps)
                next_reap = time.monotonic() + 1
            # Woken as soon as a lease on one of these tokens is freed; the timeout only covers
            # leases that end without a release (expired, or reaped above).
            self.quota.wait_for_release(fps, 0.02 + random.random() * 0.05)

    def _backoff(self, attempt: int) -> None:
        self.stats.retries += 1
        delay = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))
        time.sleep(delay * (0.5 + random.random() / 2))

    def _secondary_wait(self, resp: requests.Response, tries: int) -> float:
        """GitHub's order: retry-after; else until reset if remaining is 0; else 60 s; then doubling."""
        retry_after = resp.headers.get("retry-after")
        if retry_after is not None:
            try:
                wait = float(retry_after)
            except ValueError:
                wait = self.secondary_default_wait
        elif resp.headers.get("x-ratelimit-remaining") == "0":
            wait = float(resp.headers.get("x-ratelimit-reset", time.time() + 60)) - time.time()
        else:
            wait = self.secondary_default_wait
        return max(wait, 1.0) * (2 ** (tries - 1) if retry_after is None else 1)

    def _send(
        self,
        resource: str,
        method: str,
        url: str,
        *,
        cost: int = 1,
        prefer: str | None = None,
        exclude: frozenset[str] = frozenset(),
        request_for: Callable[[str], dict[str, Any]],
    ) -> tuple[requests.Response, str]:
        """One logical request: lease, send, account, and handle limits, 401 and transient faults."""
        attempt = 0
        secondary_tries = 0
        while True:
            lease = self._lease(resource, cost, prefer, exclude)
            fp = lease.fingerprint
            try:
                resp = self.session.request(
                    method, url, timeout=self.timeout, allow_redirects=False, **request_for(fp)
                )
            except (requests.Timeout, requests.ConnectionError) as exc:
                self.quota.release(lease)
                attempt += 1
                if attempt >= self.max_attempts:
                    raise GitHubUnavailable(
                        f"{method} {urlsplit(url).path}: {type(exc).__name__} after {attempt} tries"
                    ) from None
                self._backoff(attempt)
                continue
            self.stats.requests += 1
            self.stats.statuses[resp.status_code] += 1
            # The token's records (and any cool-down) are updated before its lease is released,
            # so no other worker can lease it in between and send into the same limit: one
            # script does all three.
            record = None
            cool_until = None
            try:
                record = QuotaStore.headers_state(resp.headers, resource)
                status = resp.status_code
                secondary = status in (403, 429) and self._is_secondary(resp)
                if secondary:
                    self.stats.secondary_hits += 1
                    secondary_tries += 1
                    wait = self._secondary_wait(resp, secondary_tries)
                    cool_until = time.time() + wait
                    log.warning("secondary rate limit on token %s: keeping off it for %.0f s", fp, wait)
            finally:
                self.quota.settle(lease, *(record or (resource, None)), cool_until=cool_until)

            if status == 401:
                self._reject(fp)
                continue  # the next lease skips it, or raises NoUsableToken
            if secondary:
                if secondary_tries > self.max_secondary_tries:
                    raise GitHubUnavailable(
                        f"secondary rate limit persisted after {secondary_tries - 1} waits"
                    )
                continue  # _lease sleeps (bounded) or raises QuotaExhausted for the caller to defer
            if status in (403, 429) and resp.headers.get("x-ratelimit-remaining") == "0":
                # Primary exhaustion of this token: its record says so now. If our clock runs
                # ahead of GitHub's, the record's reset already looks past: keep off it anyway.
                reset = float(resp.headers.get("x-ratelimit-reset") or 0)
                if reset <= time.time():
                    self.quota.cool_down(fp, time.time() + 5)
                continue
            if status in TRANSIENT:
                if resource == "graphql" and status in (502, 504):
                    self._spent(resource, cost)
                    raise GraphQLTimeout(f"GraphQL answered {status}: the query took too long")
                attempt += 1
                if attempt >= self.max_attempts:
                    raise GitHubUnavailable(
                        f"{method} {urlsplit(url).path}: HTTP {status} after {attempt} tries"
                    )
                self._backoff(attempt)
                continue
            return resp, fp

    @staticmethod
    def _is_secondary(resp: requests.Response) -> bool:
        if "retry-after" in resp.headers:
            return True
        try:
            msg = str((resp.json() or {}).get("message", ""))
        except ValueError:
            return False
        return "secondary rate limit" in msg.lower()

    def _spent(self, resource: str, amount: int) -> None:
        if resource == "core":
            self.stats.core_spent += amount
        else:
            self.stats.graphql_spent += amount
        if self.reservation_id and amount:
            self.quota.spend_reservation(self.reservation_id, resource, amount)

    # -- REST -------------------------------------------------------------------------------------
    def rest(
        self,
        path_or_url: str,
        params: dict[str, Any] | None = None,
        *,
        accept: str = "application/vnd.github+json",
        conditional: bool = True,
    ) -> RestResponse:
        """GET a REST resource, following redirects (recorded) and revalidating with ETags."""
        url = path_or_url if "://" in path_or_url else self.base_url + path_or_url
        if params:
            url = requests.Request("GET", url, params=params).prepare().url or url
        redirects: list[str] = []
        attempt = 0
        while True:
            cached = self.etags.get(url) if (conditional and self.etags) else None

            def request_for(fp: str, cached=cached) -> dict[str, Any]:
                h = self._headers(fp, accept)
                if cached and cached.fingerprint == fp:
                    h["If-None-Match"] = cached.etag
                return {"headers": h}

            resp, fp = self._send(
                "core", "GET", url, prefer=cached.fingerprint if cached else None, request_for=request_for
            )
            status = resp.status_code
            if status in REDIRECTS and resp.headers.get("location"):
                self._spent("core", 1)
                if len(redirects) >= MAX_REDIRECTS or url in redirects:
                    raise TooManyRedirects(
                        f"{urlsplit(redirects[0] if redirects else url).path}: redirect "
                        f"{'loop' if url in redirects else f'chain longer than {MAX_REDIRECTS}'}"
                    )
                redirects.append(url)
                url = urljoin(url, resp.headers["location"])
                continue
            hdrs = {k.lower(): v for k, v in resp.headers.items()}
            if status == 304 and cached:
                self.stats.not_modified += 1
                return RestResponse(200, cached.body, url, _next_link(cached.link), hdrs, redirects, True, fp)
            self._spent("core", 1)
            if status == 204 or not resp.content:
                return RestResponse(status, None, url, None, hdrs, redirects, False, fp)
            try:
                data = resp.json()
            except ValueError:
                attempt += 1
                if attempt >= self.max_attempts:
                    raise GitHubUnavailable(f"unreadable JSON from {urlsplit(url).path}") from None
                self._backoff(attempt)
                continue
            if status == 200 and self.etags and resp.headers.get("etag"):
                self.etags.put(url, fp, resp.headers["etag"], data, resp.headers.get("link"))
            return RestResponse(
                status, data, url, _next_link(resp.headers.get("link")), hdrs, redirects, False, fp
            )

    # -- GraphQL ------------------------------------------------------------------------------------
    def graphql(
        self,
        build: Callable[[bool], tuple[str, dict[str, Any]]],
        *,
        cost: int = 1,
        exclude: frozenset[str] = frozenset(),
    ) -> GraphQLResponse:
        """POST a query built by ``build(with_email)``.

        ``email`` needs a scope some tokens lack, and GitHub then fails the whole query, so
        the query is built per token: without the field once a token has proved it lacks it.
        """
        attempt = 0
        while True:
            chosen: dict[str, bool] = {}

            def request_for(fp: str, chosen=chosen) -> dict[str, Any]:
                # The body depends on the leased token's scopes, so it is built here.
                chosen["email"] = fp not in self._no_email
                query, variables = build(chosen["email"])
                return {
                    "headers": self._headers(fp, "application/json"),
                    "data": json.dumps({"query": query, "variables": variables}),
                }

            resp, fp = self._send(
                "graphql", "POST", self.graphql_url, cost=cost, exclude=exclude, request_for=request_for
            )
            with_email = chosen["email"]
            try:
                body = resp.json()
            except ValueError:
                self._spent("graphql", cost)
                attempt += 1
                if attempt >= self.max_attempts:
                    raise GitHubUnavailable("unreadable JSON from GraphQL") from None
                self._backoff(attempt)
                continue
            errors = list(body.get("errors") or [])
            kinds = {e.get("type") for e in errors}
            if "RATE_LIMITED" in kinds:
                continue  # that token's record now shows remaining 0; lease another or raise
            if "INSUFFICIENT_SCOPES" in kinds and with_email:
                self._no_email.add(fp)
                log.info("token %s lacks the scope for profile email; email is left unknown", fp)
                continue
            spent = int(((body.get("data") or {}).get("rateLimit") or {}).get("cost") or cost)
            self._spent("graphql", spent)
            if resp.status_code != 200:
                raise GitHubUnavailable(f"GraphQL answered HTTP {resp.status_code}")
            if errors and not body.get("data") and not any(e.get("type") or e.get("path") for e in errors):
                # GitHub's "Something went wrong while executing your query" (a timeout or an
                # internal error): no data, untyped errors. Smaller queries are the cure.
                raise GraphQLTimeout(
                    f"GraphQL answered 200 with only an error: {str(errors[0].get('message'))[:120]}"
                )
            return GraphQLResponse(body.get("data"), errors, spent, fp, with_email)


def _session(base_url: str) -> requests.Session:
    """A session that reads the environment's proxy and CA settings once, not per request.

    requests otherwise scans os.environ on every request (a measurable share of a small
    request's time); every URL this client asks is on ``base_url``'s host, so one look-up
    holds. trust_env off also keeps a ~/.netrc from replacing the Authorization header.
    """
    s = requests.Session()
    s.proxies.update(requests.utils.get_environ_proxies(base_url))
    ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if ca_bundle:
        s.verify = ca_bundle
    s.trust_env = False
    return s


def _next_link(link: str | None) -> str | None:
    if not link:
        return None
    for part in link.split(","):
        seg = part.strip().split(";")
        if len(seg) >= 2 and any(s.strip() == 'rel="next"' for s in seg[1:]):
            return seg[0].strip().strip("<>")
    return None
