"""GitHub REST and GraphQL client that lives inside the quota.

- Every request leases one token from the shared pool (one request in flight per token,
  the token with most quota first, never below its reserve) and writes the response's
  rate-limit headers back to the shared quota records.
- Quota is per GitHub account: each token's account is learnt once (GET /user, cached in
  Redis) and every record, lease, pace and cool-down is the account's (``accounts.py``).
- Every limit answer is classified by ``limits.py`` and handled by GitHub's documented
  procedure: primary exhaustion keeps the account's resource idle until reset + 1 s (a
  GraphQL RATE_LIMITED error is trusted over its header); a secondary limit keeps the whole
  account idle for ``retry-after``, else until reset when nothing remains, else 60 s doubled
  on repeats, and gives up after a few tries. The wait is written in the same Redis script
  that releases the lease, so no worker anywhere sends in between. No wait inside a worker
  is longer than ``max_inline_wait``: longer ones are raised as ``QuotaExhausted`` to defer.
- GraphQL queries of one account are spaced (end + max(min_gap, 0.18 x duration)) so they
  stay within GitHub's GraphQL CPU budget of 60 s per minute.
- A 401 is asked once more after a short pause; only a second one rejects the token.
- GitHub App installations (``app_auth.py``) are pool members like tokens, named by their
  installation, with the installation as their quota account; their tokens are bought and
  renewed in memory, a fresh one after a 401. An installation GitHub sells no token for any
  more is taken out of the pool, naming it; the other members carry on.
- The token goes only to the configured API origin: a redirect or ``link`` elsewhere is
  refused (``ForeignHost``).
- REST GETs are conditional (ETag cache in Redis): a 304 costs nothing.
- 5xx, timeouts, dropped connections and unreadable bodies are retried with backoff (the lease
  is freed at once); a GraphQL 502/504 is raised as ``GraphQLTimeout`` so the caller can ask
  for smaller pages; a query GitHub refuses as invalid raises ``GraphQLQueryError``.

Tokens never leave this module except in the Authorization header; everything else names
them by fingerprint.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from github_collector import limits
from github_collector.accounts import resolve_accounts
from github_collector.app_auth import InstallationToken
from github_collector.errors import (
    ConfigError,
    ForeignHost,
    GitHubUnavailable,
    GraphQLQueryError,
    GraphQLTimeout,
    InstallationUnavailable,
    NoUsableToken,
    QuotaExhausted,
    TokenRejected,
    TooManyRedirects,
)
from github_collector.etag_cache import EtagCache
from github_collector.quota import Lease, QuotaState, QuotaStore, fingerprint

log = logging.getLogger(__name__)

API_VERSION = "2022-11-28"
USER_AGENT = "github-repo-users-airflow"
REDIRECTS = (301, 302, 307, 308)
MAX_REDIRECTS = 5
TRANSIENT = (500, 502, 503, 504)
# The connection failed or dropped before a whole answer arrived: transient, like a 502.
TRANSPORT_ERRORS = (
    requests.Timeout,
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    urllib3.exceptions.ProtocolError,
)
# GraphQL errors that say the query itself is wrong (besides any error with extensions.code
# and no data): asking again cannot help.
QUERY_ERROR_TYPES = frozenset({"ARGUMENT_LIMIT"})
_UNREAD = object()  # the body was not parsed (REST answers that are no limit)


def origin(url: str) -> tuple[str, str, int | None]:
    """scheme, host and port: what must match before a token is sent."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


def _origin_text(o: tuple[str, str, int | None]) -> str:
    return f"{o[0]}://{o[1]}:{o[2]}"


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
        graphql_min_gap: float = 0.0,
        graphql_cpu_share: float = 0.18,
        unauthorized_recheck_wait: float = 2.0,
        reservation_id: str | None = None,
        session: requests.Session | None = None,
        installations: list[InstallationToken] | None = None,
    ) -> None:
        installations = list(installations or [])
        if not tokens and not installations:
            raise ConfigError(
                "no GitHub token configured: set the connection's password (and extra 'tokens'), "
                "or a GitHub App"
            )
        self.base_url = validate_base_url(base_url)
        self.graphql_url = derive_graphql_url(self.base_url)
        self.origin = origin(self.base_url)
        # Deduplicate while keeping order: the same token twice would break one-request-per-token.
        self._tokens: dict[str, str] = {}
        for t in tokens:
            t = (t or "").strip()
            if t:
                self._tokens.setdefault(fingerprint(t), t)
        # App installations: named by installation (no token material), tokens held in memory.
        self._sources: dict[str, InstallationToken] = {}
        for inst in installations:
            self._sources.setdefault(inst.name, inst)
        if not self._tokens and not self._sources:
            raise ConfigError("every configured GitHub token is empty")
        self.fingerprints = list(self._tokens) + list(self._sources)
        self.integration_fps = frozenset(self._sources)
        self.unavailable_installations: dict[str, str] = {}  # pool member -> why
        self.quota = quota
        self.etags = etags
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_inline_wait = max_inline_wait
        self.policy = limits.LimitPolicy(
            secondary_default_wait=secondary_default_wait,
            max_secondary_tries=max_secondary_tries,
            reset_pad=quota.reset_pad,
        )
        self.graphql_min_gap = graphql_min_gap
        self.graphql_cpu_share = graphql_cpu_share
        self.unauthorized_recheck_wait = unauthorized_recheck_wait
        self.reservation_id = reservation_id
        self.session = session or _session(self.base_url)
        self.stats = ClientStats()
        self._no_email: set[str] = set()
        self._seeded = False
        self._accounts_known = False
        self._accounts_lock = threading.Lock()
        self._unresolved: set[str] = set()
        self._resolve_again_at = 0.0

    def __repr__(self) -> str:  # never show tokens
        return f"GitHubClient({self.base_url!r}, tokens={self.fingerprints})"

    # -- accounts and quota records -------------------------------------------------------------
    def ensure_accounts(self) -> dict[str, int | str]:
        """Learn each token's account (cached in Redis; GET /user once per token otherwise)
        before the token is used for anything else: every record and limit is the account's."""
        if not self._must_resolve():
            return {}
        # Threads of one worker share the client: one resolves, the others wait for it, so no
        # token is used while its account is unknown (its twin could be in flight).
        with self._accounts_lock:
            if not self._must_resolve():
                return {}
            return self._resolve_accounts()

    def _must_resolve(self) -> bool:
        if not self._accounts_known:
            return True
        return bool(self._unresolved) and time.monotonic() >= self._resolve_again_at

    def _resolve_accounts(self) -> dict[str, int | str]:
        for name, inst in self._sources.items():
            # An installation is its own budget; GET /user would answer 403 to its token.
            if self.quota.account_of(name) != inst.account:
                self.quota.set_account(name, inst.account)
        outcome = resolve_accounts(
            self.quota,
            self.session,
            self.base_url,
            {fp: self._headers(fp) for fp in self._tokens},
            timeout=self.timeout,
            policy=self.policy,
            attempts=min(3, self.max_attempts),
            backoff_base=self.backoff_base,
            max_wait=self.max_inline_wait,
        )
        # A token whose account is still unknown (GET /user met a limit or failed) is kept out
        # while others can send: it might be a twin of one of them. It is asked again later.
        self._unresolved = {fp for fp in self.fingerprints if not self.quota.is_resolved(fp)}
        if self._unresolved:
            log.warning(
                "the account of token(s) %s is not known yet: they wait while the others send",
                sorted(self._unresolved),
            )
            self._resolve_again_at = time.monotonic() + 30
        self._accounts_known = True
        return outcome

    def ensure_quota_records(self, refresh_stale: bool = False) -> None:
        """Seed missing quota records from GET /rate_limit, which costs no quota.

        With ``refresh_stale``, also re-read accounts whose recorded window has ended, so a
        decision about the current window is made on its real numbers and reset time.
        One token per account is asked: the account's tokens share its records.
        """
        self.ensure_accounts()
        if self._seeded and not refresh_stale:
            return
        todo = set(self.quota.missing(self.fingerprints))
        if refresh_stale:
            now = time.time()
            for group in self.quota.accounts(self.fingerprints).values():
                states = self.quota.snapshot(group[:1])[group[0]]
                if any(st is None or st.reset <= now for st in states.values()):
                    todo.add(group[0])
        for fp in self.fingerprints:
            if fp in todo and not self.quota.is_rejected(fp):
                try:
                    self.refresh_rate_limit(fp)
                except InstallationUnavailable as exc:
                    self._retire_installation(fp, exc)
        self._seeded = True

    def refresh_rate_limit(self, fp: str) -> None:
        """Read a token's quota from GET /rate_limit (free); a few tries, then carry on without.

        Without a record the token is still used: the first response's headers fill it in.
        The request holds the account's lease like any other (workers in other processes and
        on other machines may be sending for that account right now), is skipped while the
        account cools down, and obeys a limit answer like every request.
        """
        problem = "no answer"
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1 and self.quota.is_rejected(fp):
                return  # another worker's second 401 settled it meanwhile: ask nothing more
            lease = self.quota.lease_token(fp)
            if lease is None:
                log.warning(
                    "token %s stayed busy or cooling down; going on without its /rate_limit record", fp
                )
                return
            status, body = 0, None
            cool_until = None
            try:
                resp = self.session.get(
                    self.base_url + "/rate_limit",
                    headers=self._headers(fp),
                    timeout=self.timeout,
                    allow_redirects=False,
                )
            except TRANSPORT_ERRORS as exc:
                problem = type(exc).__name__
            else:
                status = resp.status_code
                body, answer = limits.read_answer("core", resp)
                if answer is not None:
                    cool_until = self._limit_wait(lease, answer)
                elif status == 200 and isinstance(body, dict):
                    self._store_rate_limit(fp, body.get("resources") or {})
            finally:
                # after the record is stored, as in _send
                self.quota.settle(
                    lease,
                    "core",
                    None,
                    cool_until,
                    limited=cool_until is not None,
                    token_ok=status not in (0, 401),
                )
            if cool_until is not None:
                return  # the account rests; the first real answer's headers fill the record in
            if status == 401:
                if fp in self._sources:
                    self._sources[fp].invalidate()  # expired or revoked: the recheck buys another
                if self.quota.note_unauthorized(fp):
                    self._reject(fp)
                    return
                time.sleep(self.unauthorized_recheck_wait)  # checked once more, not retired at once
                continue
            if status == 200:
                if isinstance(body, dict):
                    return
                problem = "an unreadable body"
            elif status in TRANSIENT:
                problem = f"HTTP {status}"
            elif status:
                log.warning("GET /rate_limit for token %s answered %s", fp, status)
                return
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
        inst = self._sources.get(fp)
        return auth_headers(inst.value() if inst is not None else self._tokens[fp], accept)

    def _retire_installation(self, fp: str, exc: InstallationUnavailable) -> None:
        """GitHub sells no token for this installation: out of the pool, by name."""
        self.quota.mark_rejected(fp)
        self.stats.rejected_tokens.add(fp)
        self.unavailable_installations[fp] = str(exc)
        log.error("%s; the run goes on with the other tokens, if any", exc)

    def _no_usable_token(self, exc: NoUsableToken) -> NoUsableToken:
        """Name the GitHub App installations among the members out of the pool."""
        apps = sorted(fp for fp in self.integration_fps if self.quota.is_rejected(fp))
        if not apps:
            return exc
        why = "; ".join(self.unavailable_installations.get(fp, f"{fp}: rejected") for fp in apps)
        return NoUsableToken(
            f"no usable GitHub token or App installation is left: installation(s) "
            f"{', '.join(self._sources[fp].name for fp in apps)} unavailable ({why})"
        )

    def _reject(self, fp: str) -> None:
        self.quota.mark_rejected(fp)  # for 1 h; the plan's token check clears it on a 200
        self.stats.rejected_tokens.add(fp)
        log.error("%s", TokenRejected(fp))

    def _check_origin(self, url: str) -> None:
        """The token goes to the configured API origin only (scheme, host and port)."""
        there = origin(url)
        if there != self.origin:
            raise ForeignHost(_origin_text(there), _origin_text(self.origin))

    def _lease(
        self,
        resource: str,
        cost: int,
        prefer: str | None = None,
        exclude: frozenset[str] = frozenset(),
        only: str | None = None,
    ) -> Lease:
        """Lease a token, waiting briefly while all are busy or about to be usable again."""
        self.ensure_quota_records()
        busy_since = next_reap = time.monotonic()
        inline_waits = 0
        while True:
            if only is not None:
                fps = [only]
            else:
                fps = [fp for fp in self.fingerprints if fp not in exclude] if exclude else self.fingerprints
                if self._unresolved:
                    fps = [fp for fp in fps if fp not in self._unresolved] or fps
            try:
                lease = self.quota.lease(fps, resource, cost, prefer=prefer)
            except NoUsableToken as exc:
                raise self._no_usable_token(exc) from None
            except QuotaExhausted as exc:
                wait = exc.reset_at - time.time()
                inline_waits += 1
                # The GraphQL spacing is a pause bounded by the last query's duration: always
                # slept here, never worth a deferral.
                if (wait > self.max_inline_wait and not exc.spacing) or inline_waits > 20:
                    raise
                # The stored marks already hold GitHub's wait and its +1 s pad: no extra here.
                time.sleep(max(wait, 0) + 0.005)
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
            # Woken as soon as a lease on one of these accounts is freed; the timeout only
            # covers leases that end without a release (expired, or reaped above).
            self.quota.wait_for_release(fps, 0.02 + random.random() * 0.05)

    def _backoff(self, attempt: int) -> None:
        self.stats.retries += 1
        delay = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))
        time.sleep(delay * (0.5 + random.random() / 2))

    def _limit_wait(self, lease: Lease, answer: limits.LimitAnswer) -> float:
        """The epoch until which the lease's account keeps off, by GitHub's procedure."""
        streak = self.quota.bump_streak(lease) if answer.kind == limits.SECONDARY else 1
        now = time.time()
        wait = limits.wait_seconds(answer, self.policy, streak, now)
        log.warning(
            "%s for token %s (account %s, %s limit): keeping the account off %s for %.1f s",
            answer.reason,
            lease.fingerprint,
            lease.acct,
            answer.kind,
            "every resource",
            wait,
        )
        return now + wait

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
        parse: bool = False,
    ) -> tuple[requests.Response, str, Any]:
        """One logical request: lease, send, account, and handle limits, 401 and transient faults.

        Returns the response, the fingerprint of the token that answered, and the parsed JSON
        body (``parse``: always; otherwise only for answers that might be limits, else _UNREAD;
        None when unreadable).
        """
        self._check_origin(url)
        attempt = 0
        secondary_tries = 0
        recheck: str | None = None  # a token that just got a 401, asked once more
        while True:
            if recheck is not None and self.quota.is_rejected(recheck):
                recheck = None  # another worker's second 401 settled it
            lease = self._lease(resource, cost, prefer, exclude, only=recheck)
            fp = lease.fingerprint
            started = time.time()
            try:
                kwargs = request_for(fp)  # an installation's token may be bought here
            except InstallationUnavailable as exc:
                self.quota.release(lease)
                self._retire_installation(fp, exc)
                recheck = None
                continue  # the next lease skips it, or raises NoUsableToken naming it
            except BaseException:
                self.quota.release(lease)
                raise
            try:
                resp = self.session.request(
                    method, url, timeout=self.timeout, allow_redirects=False, **kwargs
                )
            except TRANSPORT_ERRORS as exc:
                # Free the account at once (not after the lease's TTL): nothing was answered.
                self.quota.settle(lease, resource, gap_until=self._gap(lease, started))
                attempt += 1
                if attempt >= self.max_attempts:
                    raise GitHubUnavailable(
                        f"{method} {urlsplit(url).path}: {type(exc).__name__} after {attempt} tries"
                    ) from None
                self._backoff(attempt)
                continue
            except BaseException:
                self.quota.release(lease)
                raise
            self.stats.requests += 1
            self.stats.statuses[resp.status_code] += 1
            status = resp.status_code
            # The account's records, cool-down and spacing are updated before its lease is
            # released, so no other worker can lease it in between and send into the same
            # limit: one script does all of it.
            record = None
            cool_until = not_before = None
            answer = None
            body: Any = _UNREAD
            try:
                if parse or status in (403, 429):
                    try:
                        body = resp.json()
                    except ValueError:
                        body = None
                # A 401's headers describe the unauthenticated budget, not the account's.
                record = QuotaStore.headers_state(resp.headers, resource) if status != 401 else None
                answer = limits.classify(resource, status, resp.headers, None if body is _UNREAD else body)
                if answer is not None:
                    until = self._limit_wait(lease, answer)
                    # After any limit answer the whole account (every token, every resource)
                    # sends nothing until the prescribed wait has passed.
                    cool_until = until
                    if answer.kind == limits.SECONDARY:
                        self.stats.secondary_hits += 1
                        secondary_tries += 1
                    else:
                        not_before = until
                        # Trust the error, not x-ratelimit-remaining: the resource is spent.
                        if record is not None:
                            rec_resource, st = record
                            record = (rec_resource, QuotaState(st.limit, 0, max(st.used, st.limit), st.reset))
            finally:
                self.quota.settle(
                    lease,
                    *(record or (resource, None)),
                    cool_until=cool_until,
                    not_before=not_before,
                    gap_until=self._gap(lease, started),
                    limited=answer is not None,
                    token_ok=status != 401,
                )

            if status == 401:
                if fp in self._sources:
                    self._sources[fp].invalidate()  # expired or revoked: the recheck buys another
                if self.quota.note_unauthorized(fp):
                    self._reject(fp)  # the second 401 in a row, from any worker: GitHub refuses it
                    recheck = None
                else:
                    log.warning("GitHub answered 401 for token %s: asking once more before retiring it", fp)
                    recheck = fp
                    time.sleep(self.unauthorized_recheck_wait)
                continue  # the next lease skips a rejected token, or raises NoUsableToken
            recheck = None
            if answer is not None:
                if secondary_tries > self.policy.max_secondary_tries:
                    raise GitHubUnavailable(
                        f"secondary rate limit persisted after {secondary_tries - 1} waits"
                    )
                continue  # _lease sleeps (bounded) or raises QuotaExhausted for the caller to defer
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
            return resp, fp, body

    def _gap(self, lease: Lease, started: float) -> float | None:
        """Not-before of the account's next GraphQL query (GitHub's GraphQL CPU budget)."""
        if lease.resource != "graphql":
            return None
        ended = time.time()
        return ended + limits.graphql_gap(ended - started, self.graphql_min_gap, self.graphql_cpu_share)

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
        """GET a REST resource, following redirects (recorded) and revalidating with ETags.

        A full URL (a ``link`` header's next page) and every redirect must stay on the
        configured API origin, or ``ForeignHost`` is raised before anything is sent there.
        """
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

            resp, fp, body = self._send(
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
                self._check_origin(url)
                continue
            hdrs = {k.lower(): v for k, v in resp.headers.items()}
            if status == 304 and cached:
                self.stats.not_modified += 1
                return RestResponse(200, cached.body, url, _next_link(cached.link), hdrs, redirects, True, fp)
            self._spent("core", 1)
            if status == 204 or not resp.content:
                return RestResponse(status, None, url, None, hdrs, redirects, False, fp)
            if body is _UNREAD:
                try:
                    body = resp.json()
                except ValueError:
                    body = None
            if body is None:
                attempt += 1
                if attempt >= self.max_attempts:
                    raise GitHubUnavailable(f"unreadable JSON from {urlsplit(url).path}") from None
                self._backoff(attempt)
                continue
            data = body
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
        Limit answers never come back from here (``_send`` waits or raises); errors with a
        path and partial data do, in ``GraphQLResponse.errors``.
        """
        attempt = 0
        while True:
            chosen: dict[str, bool] = {}

            def request_for(fp: str, chosen=chosen) -> dict[str, Any]:
                # The body depends on the leased token's scopes, so it is built here.
                chosen["email"] = fp not in self._no_email
                if fp in self._sources:
                    # App installation tokens may not list stargazers or watchers: the query
                    # leaves out what they would be refused (Query.build's ``integration``).
                    query, variables = build(chosen["email"], integration=True)
                else:
                    query, variables = build(chosen["email"])
                return {
                    "headers": self._headers(fp, "application/json"),
                    "data": json.dumps({"query": query, "variables": variables}),
                }

            resp, fp, body = self._send(
                "graphql",
                "POST",
                self.graphql_url,
                cost=cost,
                exclude=exclude,
                request_for=request_for,
                parse=True,
            )
            with_email = chosen["email"]
            if not isinstance(body, dict):
                self._spent("graphql", cost)
                attempt += 1
                if attempt >= self.max_attempts:
                    raise GitHubUnavailable("unreadable JSON from GraphQL") from None
                self._backoff(attempt)
                continue
            errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
            kinds = {e.get("type") for e in errors}
            if "INSUFFICIENT_SCOPES" in kinds and with_email:
                self._no_email.add(fp)
                log.info("token %s lacks the scope for profile email; email is left unknown", fp)
                continue
            spent = int(((body.get("data") or {}).get("rateLimit") or {}).get("cost") or cost)
            self._spent("graphql", spent)
            if errors and body.get("data") is None and _query_refused(errors):
                # A query GitHub cannot run as written (schema change, argument limit): fail
                # loudly, never read it as "this list is unavailable".
                raise GraphQLQueryError("; ".join(sorted({str(e.get("message", ""))[:300] for e in errors})))
            if resp.status_code != 200:
                raise GitHubUnavailable(f"GraphQL answered HTTP {resp.status_code}")
            if errors and not body.get("data") and not any(e.get("type") or e.get("path") for e in errors):
                # GitHub's "Something went wrong while executing your query" (a timeout or an
                # internal error): no data, untyped errors. Smaller queries are the cure.
                raise GraphQLTimeout(
                    f"GraphQL answered 200 with only an error: {str(errors[0].get('message'))[:120]}"
                )
            return GraphQLResponse(body.get("data"), errors, spent, fp, with_email)


def _query_refused(errors: list[dict]) -> bool:
    for e in errors:
        ext = e.get("extensions")
        if e.get("type") in QUERY_ERROR_TYPES or (isinstance(ext, dict) and ext.get("code")):
            return True
    return False


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
