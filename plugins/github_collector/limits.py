"""Every GitHub limit answer, classified, and the wait GitHub's documented procedure prescribes.

Pure functions, no I/O: the client classifies each answer here, then records the wait in
Redis for the whole account (``quota.py``): after any limit answer no token of the account
sends anything, on any resource, before the wait has passed (``/rate_limit`` included, which
is free but still a request in flight).

=====================================================  ==========  =====================================
answer                                                 kind        wait
=====================================================  ==========  =====================================
GraphQL ``RATE_LIMITED`` / ``RATE_LIMIT`` /            primary     the whole account until
``extensions.code: graphql_rate_limit`` (any status,               ``x-ratelimit-reset`` + 1 s, whatever
``x-ratelimit-remaining`` trusted never)                           ``x-ratelimit-remaining`` says
403/429 with ``x-ratelimit-remaining: 0`` and no       primary     the same
secondary message
message "secondary rate limit" (REST 403/429,          secondary   the whole account: ``retry-after`` if
GraphQL 200/403), or 403/429 with ``retry-after``,                 a number; else until reset + 1 s if
or a bare 429                                                      remaining is 0; else
                                                                   ``secondary_default_wait`` (60 s)
                                                                   doubled on each repeat, capped
reset already past by our clock                        either      ``skew_wait`` (5 s): clocks differ
=====================================================  ==========  =====================================

Not limits (``classify`` returns None): 401 (the client checks it once more), 403 that says
something else (blocked repository, list too large, not accessible by integration), 5xx.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PRIMARY = "primary"
SECONDARY = "secondary"
# GraphQL error types and codes that mean "the primary budget is spent". GitHub added the
# second spelling in 2026; the header may still show remaining > 0 on either.
RATE_LIMIT_TYPES = frozenset({"RATE_LIMITED", "RATE_LIMIT"})
RATE_LIMIT_CODES = frozenset({"graphql_rate_limit"})
SECONDARY_PHRASES = ("secondary rate limit", "abuse detection")


@dataclass(frozen=True)
class LimitPolicy:
    """Every constant of the procedure in one place (seconds)."""

    secondary_default_wait: float = 60.0  # agreed with GitHub (octokit/plugin-throttling.js#594)
    secondary_max_wait: float = 900.0  # cap of the doubling
    reset_pad: float = 1.0  # reset headers are whole seconds; resume just after, as octokit
    skew_wait: float = 5.0  # the reset looks past by our clock: GitHub's runs behind
    max_secondary_tries: int = 5  # secondary answers to one logical request before giving up


@dataclass(frozen=True)
class LimitAnswer:
    kind: str  # PRIMARY or SECONDARY
    resource: str  # the resource the answer is about (core, graphql, search…)
    retry_after: float | None  # a usable numeric retry-after, else None
    remaining: int | None
    reset: float | None
    reason: str  # short, for logs; never carries a secret


def _header(headers: Mapping[str, str], name: str) -> str | None:
    v = headers.get(name)
    if v is None:  # requests' headers are case-insensitive; a plain dict may not be
        v = next((val for k, val in headers.items() if k.lower() == name), None)
    return v


def _number(raw: str | None) -> float | None:
    if raw is None or not str(raw).strip():
        return None
    try:
        v = float(raw)
    except ValueError:
        return None
    return v if math.isfinite(v) and v >= 0 else None


def _messages(body: Any) -> tuple[str, set[str], set[str]]:
    """All error text of a body, with GraphQL error types and extension codes."""
    if not isinstance(body, dict):
        return "", set(), set()
    texts = [str(body.get("message") or "")]
    types: set[str] = set()
    codes: set[str] = set()
    for err in body.get("errors") or []:
        if not isinstance(err, dict):
            continue
        texts.append(str(err.get("message") or ""))
        if err.get("type"):
            types.add(str(err["type"]))
        ext = err.get("extensions")
        if isinstance(ext, dict) and ext.get("code"):
            codes.add(str(ext["code"]))
    return " ".join(texts).lower(), types, codes


def read_answer(resource: str, resp: Any) -> tuple[Any, LimitAnswer | None]:
    """A ``requests`` response's parsed JSON body (None if unreadable) and the limit it reports."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    return body, classify(resource, resp.status_code, resp.headers, body)


def classify(resource: str, status: int, headers: Mapping[str, str], body: Any) -> LimitAnswer | None:
    """Which limit, if any, an answer reports. ``body`` is the parsed JSON (None if unreadable)."""
    if status == 401 or status >= 500:
        return None
    text, types, codes = _messages(body)
    retry_raw = _header(headers, "retry-after")
    remaining_raw = _number(_header(headers, "x-ratelimit-remaining"))
    remaining = None if remaining_raw is None else int(remaining_raw)
    reset = _number(_header(headers, "x-ratelimit-reset"))
    about = _header(headers, "x-ratelimit-resource") or resource

    def answer(kind: str, reason: str) -> LimitAnswer:
        return LimitAnswer(kind, about, _number(retry_raw), remaining, reset, reason)

    if any(p in text for p in SECONDARY_PHRASES):
        return answer(SECONDARY, f"HTTP {status} secondary rate limit")
    if types & RATE_LIMIT_TYPES or codes & RATE_LIMIT_CODES:
        # GraphQL's primary exhaustion: trust the error, not x-ratelimit-remaining.
        return answer(PRIMARY, f"HTTP {status} GraphQL {sorted(types & RATE_LIMIT_TYPES or codes)[0]}")
    if status in (403, 429):
        if retry_raw is not None:
            return answer(SECONDARY, f"HTTP {status} with retry-after")
        if remaining == 0:
            return answer(PRIMARY, f"HTTP {status} with x-ratelimit-remaining 0")
        if status == 429:
            return answer(SECONDARY, "HTTP 429")
    return None


def wait_seconds(answer: LimitAnswer, policy: LimitPolicy, streak: int, now: float) -> float:
    """Seconds to keep off: GitHub's order for secondary limits, reset + pad for primary ones.

    ``streak`` counts this account's limit answers in a row, this one included (1 = first).
    """
    until_reset = None
    if answer.reset is not None:
        until_reset = answer.reset + policy.reset_pad - now
        if until_reset <= 0:
            until_reset = policy.skew_wait
    if answer.kind == PRIMARY:
        return until_reset if until_reset is not None else policy.secondary_default_wait
    if answer.retry_after is not None:
        return answer.retry_after
    if answer.remaining == 0 and until_reset is not None:
        return until_reset
    doubled = policy.secondary_default_wait * 2 ** max(0, streak - 1)
    return min(policy.secondary_max_wait, max(policy.secondary_default_wait, doubled))


def graphql_gap(duration: float, min_gap: float, cpu_share: float) -> float:
    """Pause after a GraphQL query before the account's next one.

    GitHub allows 60 s of GraphQL CPU per 60 s of real time per account; a query's CPU is at
    most its duration, so resting ``cpu_share`` x duration after each keeps one-at-a-time
    queries at 1 / (1 + cpu_share) of that budget (0.18 → 85%).
    """
    return max(min_gap, cpu_share * max(duration, 0.0))
