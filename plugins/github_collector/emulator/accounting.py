"""The emulator's own bookkeeping: primary quota windows, secondary limits, stats and request log.

All state sits behind one lock; every method is short, so contention stays low.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from .config import EmulatorConfig, TokenConfig

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


@dataclass
class Window:
    limit: int
    used: int = 0
    reset: int = 0  # epoch seconds at which the window ends

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


@dataclass
class TokenState:
    name: str | None  # None for unauthenticated callers
    config: TokenConfig | None
    windows: dict[str, Window]
    valid: bool = True
    in_flight: int = 0
    points: dict[str, deque] = field(default_factory=dict)  # family -> deque[(t, points)]
    cost: Counter = field(default_factory=Counter)  # resource -> total cost across windows

    @property
    def label(self) -> str:
        return self.name or "<anonymous>"


class Accounting:
    def __init__(self, config: EmulatorConfig, clock=time.time) -> None:
        self.config = config
        self.clock = clock
        self.lock = threading.Lock()
        self.by_name: dict[str, TokenState] = {}
        self.by_value: dict[str, TokenState] = {}
        for tok in config.tokens:
            limits = {"core": tok.core_limit, "graphql": tok.graphql_limit, "search": tok.search_limit}
            state = TokenState(tok.name, tok, {r: Window(limits[r]) for r in RESOURCES}, valid=tok.valid)
            self.by_name[tok.name] = state
            self.by_value[tok.token] = state
        # GitHub gives unauthenticated callers 60/h for core and no GraphQL at all
        self.anonymous = TokenState(
            None,
            None,
            {"core": Window(config.unauthenticated_core_limit), "graphql": Window(0), "search": Window(10)},
        )
        self.status_counts: Counter = Counter()
        self.secondary_hits = 0
        self.primary_hits = 0
        self.faults: Counter = Counter(dict.fromkeys(FAULT_KINDS, 0))
        self.requests = 0
        self.log: deque = deque(maxlen=config.log_limit)
        self.reset()

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
            return True, Window(w.limit, w.used, w.reset)

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

    # ------------------------------------------------------------------ secondary limits
    def enter(self, state: TokenState) -> int | None:
        """Count a request in flight; returns a retry-after when over the concurrency limit."""
        with self.lock:
            if state.in_flight >= self.config.secondary_max_concurrent:
                self.secondary_hits += 1
                return self.config.secondary_retry_after or 1
            state.in_flight += 1
            return None

    def leave(self, state: TokenState) -> None:
        with self.lock:
            state.in_flight -= 1

    def take_points(self, state: TokenState, family: str, points: int, graphql: bool) -> int | None:
        """Spend secondary-limit points; returns a retry-after (seconds) when the per-minute budget
        of this endpoint family is spent."""
        cfg = self.config
        limit = cfg.secondary_graphql_points_per_minute if graphql else cfg.secondary_rest_points_per_minute
        with self.lock:
            now = self.clock()
            q = state.points.setdefault(family, deque())
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
    ) -> None:
        """faults: the FAULT_KINDS injected into this answer (logged, and counted in stats).
        note: more to log with it (the GraphQL pages served, which limit refused it)."""
        faults = list(faults)
        with self.lock:
            self.requests += 1
            self.status_counts[str(status)] += 1
            self.faults.update(faults)
            entry = {
                "t": self.clock(),
                "token": state.name if state else None,
                "method": method,
                "path": path,
                "status": status,
                "resource": resource,
                "cost": cost,
            }
            if faults:
                entry["faults"] = faults
            if note:
                entry.update(note)
            self.log.append(entry)

    def stats(self) -> dict:
        def windows(state: TokenState) -> dict:
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
            }

    def request_log(self) -> list[dict]:
        with self.lock:
            return list(self.log)
