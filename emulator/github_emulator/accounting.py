"""The emulator's own bookkeeping: primary quota windows, secondary limits, prescribed waits,
stats and request log.

Quota belongs to the GitHub account, not to the token: primary windows, the concurrency limit,
secondary points and GraphQL CPU time are kept per account and shared by all its tokens.
All state sits behind one lock; every method is short, so contention stays low.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from .config import ANSWER_KINDS, EmulatorConfig, TokenConfig

RESOURCES = ("core", "graphql", "search")
# Names under which stats()["faults"] counts each injected fault (see app.py and rest.py).
FAULT_KINDS = (
    "502",  # fault_502_rate
    "burst",  # fault_burst: one per answered 5xx
    "slow",  # fault_slow_rate: one per stalled answer
    "bad_json_truncated",  # fault_bad_json_rate: a 200 whose JSON body was cut
    "bad_json_html",  # fault_bad_json_rate: a 200 carrying an HTML page
    "graphql_error",  # fault_graphql_error_rate: data null + GitHub's internal error
    "graphql_partial",  # fault_graphql_partial_rate: one field null + SERVICE_UNAVAILABLE
    "link_loop",  # fault_link_loop: one per page whose rel="next" points back
    "redirect_chain",  # fault_redirect_chain: one per injected 301
    "redirect_loop",  # fault_redirect_loop: one per looping 301
)
# Limit answers the emulator gives on its own (stats()["answers"] counts them next to ANSWER_KINDS).
NATURAL_ANSWERS = (
    "primary_exhausted",  # a window ran out: REST 403/429, GraphQL 200 RATE_LIMITED
    "secondary_points",  # points per minute of an endpoint family (REST) or of GraphQL
    "secondary_concurrency",  # more requests in flight than secondary_max_concurrent
    "secondary_cpu",  # the account's GraphQL CPU time per window is used up
    "secondary_early",  # punish_early: a request sent before its prescribed wait
)


@dataclass
class Window:
    limit: int
    used: int = 0
    reset: int = 0  # epoch seconds at which the window ends

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


@dataclass
class AccountState:
    """What GitHub keeps per account: shared by every token of it."""

    name: str | None  # None for unauthenticated callers
    windows: dict[str, Window]
    tokens: list[str] = field(default_factory=list)
    in_flight: int = 0
    points: dict[str, deque] = field(default_factory=dict)  # family -> deque[(t, points)]
    cpu: deque = field(default_factory=deque)  # (t, ms) of executed GraphQL queries
    cost: Counter = field(default_factory=Counter)  # resource -> total cost across windows
    # epoch times before which GitHub told this account to send nothing, after a primary limit
    # (the window's reset; a quota reset ends it) and after a secondary one
    primary_wait: float = 0.0
    secondary_wait: float = 0.0

    @property
    def wait_until(self) -> float:
        return max(self.primary_wait, self.secondary_wait)


@dataclass
class TokenState:
    name: str | None  # None for unauthenticated callers
    config: TokenConfig | None
    account: AccountState
    valid: bool = True
    cost: Counter = field(default_factory=Counter)  # resource -> total cost across windows

    @property
    def label(self) -> str:
        return self.name or "<anonymous>"

    @property
    def windows(self) -> dict[str, Window]:
        return self.account.windows

    @property
    def account_name(self) -> str | None:
        return self.account.name


class Accounting:
    def __init__(self, config: EmulatorConfig, clock=time.time) -> None:
        self.config = config
        self.clock = clock
        self.lock = threading.Lock()
        self.by_name: dict[str, TokenState] = {}
        self.by_value: dict[str, TokenState] = {}
        self.accounts: dict[str, AccountState] = {}
        for tok in config.tokens:
            self._register(tok)
        # GitHub gives unauthenticated callers 60/h for core and no GraphQL at all
        self.anonymous = TokenState(
            None,
            None,
            AccountState(
                None,
                {
                    "core": Window(config.unauthenticated_core_limit),
                    "graphql": Window(0),
                    "search": Window(10),
                },
            ),
        )
        self.status_counts: Counter = Counter()
        self.answers: Counter = Counter(dict.fromkeys((*ANSWER_KINDS, *NATURAL_ANSWERS), 0))
        self.early_requests: Counter = Counter()  # account -> requests sent before their wait
        self.foreign_requests = 0  # requests that arrived on a foreign host name
        self.foreign_with_token = 0  # ... carrying an Authorization header
        self.secondary_hits = 0
        self.primary_hits = 0
        self.faults: Counter = Counter(dict.fromkeys(FAULT_KINDS, 0))
        self.requests = 0
        self.log: deque = deque(maxlen=config.log_limit)
        self.reset()

    def _register(self, tok: TokenConfig) -> TokenState:
        account_name = tok.account or tok.name
        account = self.accounts.get(account_name)
        if account is None:  # the account's limits come from its first token
            limits = {"core": tok.core_limit, "graphql": tok.graphql_limit, "search": tok.search_limit}
            account = AccountState(account_name, {r: Window(limits[r]) for r in RESOURCES})
            self.accounts[account_name] = account
        account.tokens.append(tok.name)
        state = TokenState(tok.name, tok, account, valid=tok.valid)
        self.by_name[tok.name] = state
        self.by_value[tok.token] = state
        return state

    def add_token(self, tok: TokenConfig) -> TokenState:
        """A token issued at runtime (a GitHub App installation token)."""
        with self.lock:
            if tok.name in self.by_name or tok.token in self.by_value:
                raise ValueError(f"token {tok.name!r} exists already")
            return self._register(tok)

    # ------------------------------------------------------------------ identity
    def identify(self, authorization: str | None) -> tuple[TokenState | None, bool]:
        """Returns (state, ok). ok is False for an unknown or revoked token (-> 401)."""
        if not authorization:
            return self.anonymous, True
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() not in ("bearer", "token") or not value.strip():
            return None, False
        state = self.by_value.get(value.strip())
        with self.lock:
            if state is None or not state.valid:
                return state, False
            expires = state.config.expires_at if state.config else None
            if expires is not None and self.clock() >= expires:
                return state, False  # an installation token past its expires_at
        return state, True

    def set_valid(self, name: str, valid: bool) -> None:
        with self.lock:
            self.by_name[name].valid = bool(valid)

    # ------------------------------------------------------------------ primary quota
    def _window(self, state: TokenState, resource: str) -> Window:
        w = state.windows[resource]
        now = self.clock()
        if now >= w.reset:
            w.used = 0
            w.reset = math.ceil(now + self.config.window_seconds)
        return w

    def snapshot(self, state: TokenState, resource: str) -> Window:
        with self.lock:
            w = self._window(state, resource)
            return Window(w.limit, w.used, w.reset)

    def try_charge(self, state: TokenState, resource: str, cost: int) -> tuple[bool, Window]:
        """Charge cost if the window has that much left; returns (charged, window after)."""
        with self.lock:
            w = self._window(state, resource)
            if cost > w.remaining:
                self.primary_hits += 1
                return False, Window(w.limit, w.used, w.reset)
            w.used += cost
            state.cost[resource] += cost
            state.account.cost[resource] += cost
            return True, Window(w.limit, w.used, w.reset)

    def charge_penalty(self, state: TokenState, resource: str, points: int) -> Window:
        """Charge extra points (what is left of them at most), e.g. GitHub's timeout penalty."""
        with self.lock:
            w = self._window(state, resource)
            extra = min(points, w.remaining)
            w.used += extra
            state.cost[resource] += extra
            state.account.cost[resource] += extra
            return Window(w.limit, w.used, w.reset)

    def empty_window(self, state: TokenState, resource: str) -> tuple[Window, Window]:
        """Use up what is left of the account's window; returns (before, after)."""
        with self.lock:
            w = self._window(state, resource)
            before = Window(w.limit, w.used, w.reset)
            w.used = max(w.used, w.limit)
            return before, Window(w.limit, w.used, w.reset)

    def note_primary_hit(self) -> None:
        with self.lock:
            self.primary_hits += 1

    def reset(self, name: str | None = None) -> None:
        """Start a new window now, for every token or only the named one."""
        with self.lock:
            states = [self.by_name[name]] if name else [*self.by_name.values(), self.anonymous]
            reset_at = math.ceil(self.clock() + self.config.window_seconds)
            for state in states:
                for w in state.windows.values():
                    w.used, w.reset = 0, reset_at
                state.account.primary_wait = 0.0  # the reset it waited for has come

    # ------------------------------------------------------------------ prescribed waits
    def prescribe(self, state: TokenState, until: float, primary: bool) -> None:
        """GitHub told this account to send nothing before `until` (epoch seconds)."""
        with self.lock:
            account = state.account
            if primary:
                account.primary_wait = max(account.primary_wait, until)
            else:
                account.secondary_wait = max(account.secondary_wait, until)

    def arrive(self, state: TokenState) -> bool:
        """Whether a request of this account arrives before its prescribed wait ended (counted)."""
        with self.lock:
            account = state.account
            if account.name is None or self.clock() >= account.wait_until:
                return False
            self.early_requests[account.name] += 1
            return True

    def note_foreign(self, with_token: bool) -> None:
        with self.lock:
            self.foreign_requests += 1
            self.foreign_with_token += bool(with_token)

    # ------------------------------------------------------------------ secondary limits
    def enter(self, state: TokenState) -> int | None:
        """Count a request in flight; returns a retry-after when over the concurrency limit."""
        with self.lock:
            if state.account.in_flight >= self.config.secondary_max_concurrent:
                self.secondary_hits += 1
                return self.config.secondary_retry_after or 1
            state.account.in_flight += 1
            return None

    def leave(self, state: TokenState) -> None:
        with self.lock:
            state.account.in_flight -= 1

    def cpu_ms(self, node_count: int) -> float:
        """CPU time GitHub spends on a query touching node_count nodes (the cost model's count)."""
        cfg = self.config
        return cfg.graphql_cpu_ms_base + cfg.graphql_cpu_ms_per_node * node_count

    def _cpu_spent(self, account: AccountState, now: float) -> float:
        q, window = account.cpu, self.config.secondary_window_seconds
        while q and q[0][0] <= now - window:
            q.popleft()
        return sum(ms for _, ms in q)

    def cpu_retry(self, state: TokenState) -> int | None:
        """A retry-after (seconds) when the account's GraphQL CPU budget is used up, else None.
        Sliding window: a query runs while the CPU time booked within the last
        secondary_window_seconds is below the budget, and its own time is booked afterwards."""
        cfg = self.config
        if not cfg.graphql_cpu_seconds_per_minute:
            return None
        budget = cfg.graphql_cpu_seconds_per_minute * 1000
        with self.lock:
            now = self.clock()
            account = state.account
            spent = self._cpu_spent(account, now)
            if spent < budget:
                return None
            self.secondary_hits += 1
            if cfg.secondary_retry_after is not None:
                return cfg.secondary_retry_after
            # the time until enough booked CPU ages out to bring the total below the budget
            for t, ms in account.cpu:
                spent -= ms
                if spent < budget:
                    return max(1, math.ceil(t + cfg.secondary_window_seconds - now))
            return 1

    def book_cpu(self, state: TokenState, ms: float) -> None:
        if not self.config.graphql_cpu_seconds_per_minute or ms <= 0:
            return
        with self.lock:
            state.account.cpu.append((self.clock(), ms))

    def take_points(self, state: TokenState, family: str, points: int, graphql: bool) -> int | None:
        """Spend secondary-limit points; returns a retry-after (seconds) when the per-minute budget
        of this endpoint family is spent."""
        cfg = self.config
        limit = cfg.secondary_graphql_points_per_minute if graphql else cfg.secondary_rest_points_per_minute
        with self.lock:
            now = self.clock()
            q = state.account.points.setdefault(family, deque())
            while q and q[0][0] <= now - cfg.secondary_window_seconds:
                q.popleft()
            spent = sum(p for _, p in q)
            if spent + points > limit:
                self.secondary_hits += 1
                if cfg.secondary_retry_after is not None:
                    return cfg.secondary_retry_after
                free_at = q[0][0] + cfg.secondary_window_seconds if q else now + 1
                return max(1, math.ceil(free_at - now))
            q.append((now, points))
            return None

    # ------------------------------------------------------------------ stats and log
    def record(
        self,
        state: TokenState | None,
        method: str,
        path: str,
        status: int,
        resource: str,
        cost: int,
        faults: Iterable[str] = (),
        note: dict | None = None,
        answer: str | None = None,
        early: bool = False,
    ) -> None:
        """faults: the FAULT_KINDS injected into this answer (logged, and counted in stats).
        note: more to log with it (the GraphQL pages served, which limit refused it).
        answer: the limit or error answer given (ANSWER_KINDS or NATURAL_ANSWERS), if any.
        early: the request came before the account's prescribed wait ended."""
        faults = list(faults)
        with self.lock:
            self.requests += 1
            self.status_counts[str(status)] += 1
            self.faults.update(faults)
            if answer:
                self.answers[answer] += 1
            entry = {
                "t": self.clock(),
                "token": state.name if state else None,
                "account": state.account.name if state else None,
                "method": method,
                "path": path,
                "status": status,
                "resource": resource,
                "cost": cost,
                "answer": answer,
                "early": early,
            }
            if faults:
                entry["faults"] = faults
            if note:
                entry.update(note)
            self.log.append(entry)

    def stats(self) -> dict:
        def windows(state: TokenState | AccountState) -> dict:
            out = {}
            for r in ("core", "graphql"):
                w = self._window(state, r)
                out[r] = {"limit": w.limit, "used": w.used, "remaining": w.remaining, "reset": w.reset}
            return out

        with self.lock:
            return {
                "tokens": {name: windows(s) for name, s in self.by_name.items()},
                "anonymous": windows(self.anonymous),
                "requests_by_status": dict(self.status_counts),
                "secondary_limit_hits": self.secondary_hits,
                "primary_limit_hits": self.primary_hits,
                "faults_injected": sum(self.faults.values()),
                "faults": dict(self.faults),
                "requests": self.requests,
                "cost_by_token": {
                    name: {"core": s.cost["core"], "graphql": s.cost["graphql"]}
                    for name, s in self.by_name.items()
                },
                "accounts": {
                    name: {
                        **windows(a),
                        "tokens": list(a.tokens),
                        "graphql_cpu_ms": round(self._cpu_spent(a, self.clock()), 3),
                        "wait_until": a.wait_until or None,
                    }
                    for name, a in self.accounts.items()
                },
                "cost_by_account": {
                    name: {"core": a.cost["core"], "graphql": a.cost["graphql"]}
                    for name, a in self.accounts.items()
                },
                "answers": dict(self.answers),
                "early_requests": sum(self.early_requests.values()),
                "early_requests_by_account": {name: self.early_requests[name] for name in self.accounts},
                "foreign_requests": self.foreign_requests,
                "foreign_requests_with_token": self.foreign_with_token,
            }

    def request_log(self) -> list[dict]:
        with self.lock:
            return list(self.log)
