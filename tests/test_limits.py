"""limits.py: every limit answer GitHub gives, classified, and the wait its procedure prescribes.

One row per status/header/body case, as octokit's tests have one case per answer.
"""

from __future__ import annotations

import pytest

from github_collector.limits import (
    PRIMARY,
    SECONDARY,
    LimitPolicy,
    classify,
    graphql_gap,
    wait_seconds,
)

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0
RESET = int(NOW) + 120
SECONDARY_MSG = {"message": "You have exceeded a secondary rate limit. Please wait a few minutes."}
POLICY = LimitPolicy(secondary_default_wait=60, secondary_max_wait=900, reset_pad=1, skew_wait=5)


def hdrs(remaining: int | None = 4000, reset: float | None = RESET, **more: str) -> dict[str, str]:
    h = {"x-ratelimit-limit": "5000"}
    if remaining is not None:
        h["x-ratelimit-remaining"] = str(remaining)
    if reset is not None:
        h["x-ratelimit-reset"] = str(reset)
    h.update({k.replace("_", "-"): v for k, v in more.items()})
    return h


ROWS = [
    # (id, resource, status, headers, body, kind, wait for streak 1)
    (
        "graphql RATE_LIMITED, header 0",
        "graphql",
        200,
        hdrs(0),
        {"data": None, "errors": [{"type": "RATE_LIMITED", "message": "API rate limit exceeded"}]},
        PRIMARY,
        121.0,
    ),
    (
        "graphql RATE_LIMITED, header still > 0: trust the error",
        "graphql",
        200,
        hdrs(4999),
        {"data": None, "errors": [{"type": "RATE_LIMITED", "message": "API rate limit exceeded"}]},
        PRIMARY,
        121.0,
    ),
    (
        "graphql RATE_LIMIT with extensions.code (2026)",
        "graphql",
        200,
        hdrs(12),
        {"errors": [{"type": "RATE_LIMIT", "extensions": {"code": "graphql_rate_limit"}, "message": "x"}]},
        PRIMARY,
        121.0,
    ),
    (
        "extensions.code alone",
        "graphql",
        200,
        hdrs(12),
        {"errors": [{"extensions": {"code": "graphql_rate_limit"}, "message": "x"}]},
        PRIMARY,
        121.0,
    ),
    ("REST 403 remaining 0", "core", 403, hdrs(0), {"message": "API rate limit exceeded"}, PRIMARY, 121.0),
    ("REST 429 remaining 0", "core", 429, hdrs(0), {"message": "API rate limit exceeded"}, PRIMARY, 121.0),
    (
        "primary, reset already past by our clock",
        "core",
        403,
        hdrs(0, reset=NOW - 3),
        {"message": "API rate limit exceeded"},
        PRIMARY,
        5.0,
    ),
    ("REST 403 secondary, retry-after", "core", 403, hdrs(retry_after="7"), SECONDARY_MSG, SECONDARY, 7.0),
    ("REST 429 secondary, retry-after", "core", 429, hdrs(retry_after="7"), SECONDARY_MSG, SECONDARY, 7.0),
    ("REST 403 secondary, no retry-after", "core", 403, hdrs(), SECONDARY_MSG, SECONDARY, 60.0),
    (
        "REST 429 secondary, blank retry-after",
        "core",
        429,
        hdrs(retry_after=""),
        SECONDARY_MSG,
        SECONDARY,
        60.0,
    ),
    (
        "secondary, unreadable retry-after",
        "core",
        403,
        hdrs(retry_after="soon"),
        SECONDARY_MSG,
        SECONDARY,
        60.0,
    ),
    ("secondary, remaining 0: until reset", "core", 403, hdrs(0), SECONDARY_MSG, SECONDARY, 121.0),
    (
        "GraphQL secondary as HTTP 200",
        "graphql",
        200,
        hdrs(4000),
        {"errors": [{"message": "You have exceeded a secondary rate limit."}]},
        SECONDARY,
        60.0,
    ),
    ("GraphQL secondary as HTTP 403", "graphql", 403, hdrs(4000), SECONDARY_MSG, SECONDARY, 60.0),
    ("403 with retry-after and no message", "core", 403, hdrs(retry_after="3"), None, SECONDARY, 3.0),
    ("bare 429", "core", 429, hdrs(), None, SECONDARY, 60.0),
    (
        "old wording: abuse detection",
        "core",
        403,
        hdrs(),
        {"message": "You have triggered an abuse detection mechanism."},
        SECONDARY,
        60.0,
    ),
]


@pytest.mark.parametrize(
    ("resource", "status", "headers", "body", "kind", "wait"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_every_limit_answer_is_classified_with_githubs_wait(resource, status, headers, body, kind, wait):
    answer = classify(resource, status, headers, body)
    assert answer is not None and answer.kind == kind
    assert wait_seconds(answer, POLICY, 1, NOW) == pytest.approx(wait)


NOT_LIMITS = [
    ("200 ok", "core", 200, hdrs(), [{"login": "a"}]),
    ("401", "core", 401, hdrs(0), {"message": "Bad credentials"}),
    (
        "403 contributor list too large",
        "core",
        403,
        hdrs(),
        {"message": "The history or contributor list is too large"},
    ),
    (
        "403 blocked repository",
        "core",
        403,
        hdrs(),
        {"message": "Repository access blocked", "block": {"reason": "tos"}},
    ),
    (
        "403 not accessible by integration",
        "core",
        403,
        hdrs(),
        {"message": "Resource not accessible by integration"},
    ),
    ("502", "graphql", 502, hdrs(), {"message": "Server Error"}),
    (
        "GraphQL NOT_FOUND with a path",
        "graphql",
        200,
        hdrs(),
        {"data": {"r0": None}, "errors": [{"type": "NOT_FOUND", "path": ["r0"], "message": "x"}]},
    ),
    (
        "GraphQL validation error",
        "graphql",
        200,
        hdrs(),
        {"errors": [{"path": ["query"], "extensions": {"code": "undefinedField"}, "message": "Field 'x'"}]},
    ),
    ("unreadable body", "core", 200, hdrs(), None),
]


@pytest.mark.parametrize(
    ("resource", "status", "headers", "body"), [r[1:] for r in NOT_LIMITS], ids=[r[0] for r in NOT_LIMITS]
)
def test_answers_that_are_no_limit(resource, status, headers, body):
    assert classify(resource, status, headers, body) is None


def test_the_default_secondary_wait_doubles_on_repeats_up_to_the_cap():
    answer = classify("core", 403, hdrs(), SECONDARY_MSG)
    waits = [wait_seconds(answer, POLICY, n, NOW) for n in range(1, 7)]
    assert waits == [60, 120, 240, 480, 900, 900]


def test_retry_after_is_obeyed_as_given_even_on_repeats():
    answer = classify("core", 429, hdrs(retry_after="9"), SECONDARY_MSG)
    assert [wait_seconds(answer, POLICY, n, NOW) for n in (1, 3)] == [9, 9]


def test_headers_are_read_whatever_their_case():
    answer = classify("core", 403, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(RESET)}, None)
    assert answer is not None and answer.kind == PRIMARY
    assert wait_seconds(answer, POLICY, 1, NOW) == pytest.approx(121)


def test_the_answer_names_the_resource_github_reports():
    answer = classify(
        "core", 403, hdrs(0, x_ratelimit_resource="search"), {"message": "API rate limit exceeded"}
    )
    assert answer.resource == "search"


def test_primary_without_a_reset_header_falls_back_to_the_default_wait():
    answer = classify("core", 403, hdrs(0, reset=None), {"message": "API rate limit exceeded"})
    assert wait_seconds(answer, POLICY, 1, NOW) == 60


def test_graphql_gap_keeps_one_at_a_time_queries_within_85_percent_of_the_cpu_budget():
    assert graphql_gap(2.0, 0.0, 0.18) == pytest.approx(0.36)
    assert 2.0 / (2.0 + graphql_gap(2.0, 0.0, 0.18)) <= 0.85
    assert graphql_gap(0.01, 1.0, 0.18) == 1.0  # the configured least gap wins for short queries
    assert graphql_gap(-1, 0.0, 0.18) == 0.0
