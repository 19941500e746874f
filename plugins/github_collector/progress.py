"""What a person watching a fetch slot's log wants to know: where it is, and how long it has left.

The estimate is rough by nature (list sizes are GitHub's summary counts; contributor lists
have none, so one page is assumed for each unfinished one), but it accounts for the quota:
when the work left costs more than the accounts have above their reserves, the batch cannot
end before the reset that pays for the rest (see ``eta_seconds``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from github_collector.collector import COUNT_KEY
from github_collector.quota import QuotaState

PAGE_SIZE = 100
PAGES_PER_QUERY = 10  # GraphQL list pages packed into one query (README, Quota use)
WINDOW_S = 3600.0  # GitHub's primary rate-limit window: an hour (5,000 units an hour per account)


def remaining_pages(state: Mapping) -> dict[str, int]:
    """List pages still to read per resource: GraphQL lists from their counts, contributors (REST)
    one per unfinished list. A repository whose summary is not read yet counts one page a list."""
    out = {"core": 0, "graphql": 0}
    for repo in state["repos"].values():
        for rel, stream in repo["streams"].items():
            if stream["done"]:
                continue
            resource = "core" if rel == "contributors" else "graphql"
            count = (repo.get("counts") or {}).get(COUNT_KEY.get(rel, ""))
            total = math.ceil(count / PAGE_SIZE) if isinstance(count, int) else 1
            out[resource] += max(1, total - int(stream.get("pages") or 0))
    return out


def current_list(state: Mapping) -> str:
    """The first repository/relation still being read, or what is left once lists are done."""
    for name, repo in state["repos"].items():
        for rel, stream in repo["streams"].items():
            if not stream["done"]:
                return f"{repo.get('full_name') or name} {rel}"
    pending = len(state.get("pending_profiles") or ())
    return f"{pending} stored profile(s) to refresh" if pending else "finishing"


@dataclass(frozen=True)
class AccountQuota:
    """One account's quota of one resource, as the ETA sees it (units above the reserve)."""

    available: int  # spendable now
    reset_in: float  # seconds until its window resets
    capacity: int  # spendable in a full window (its limit less the reserve)


def account_quota(q: QuotaState, reserve: int, now: float) -> AccountQuota:
    """An account's quota record as the ETA needs it. A window whose reset has passed counts as
    full now (``QuotaState.available``) and starts again at its first use: its next reset is
    at most a window away, never now (that would count the same refill twice)."""
    return AccountQuota(
        available=max(0, q.available(now) - reserve),
        reset_in=q.reset - now if q.reset > now else WINDOW_S,
        capacity=max(0, q.limit - reserve),
    )


def quota_cost(left: Mapping[str, int]) -> dict[str, int]:
    """What the pages left cost: a REST page one unit, a GraphQL query of up to
    ``PAGES_PER_QUERY`` list pages one point."""
    return {"core": left.get("core", 0), "graphql": math.ceil(left.get("graphql", 0) / PAGES_PER_QUERY)}


def _paid_from(short: int, accounts: Sequence[AccountQuota]) -> tuple[float, int] | None:
    """When the refills at the accounts' resets (each its capacity, every ``WINDOW_S``) have
    brought ``short`` more units, and how many units must still be spent after that moment
    (what was lacking just before its refill). None if no refill ever comes."""
    refills = sorted((max(0.0, a.reset_in), a.capacity) for a in accounts if a.capacity > 0)
    total = sum(c for _, c in refills)
    if total <= 0:
        return None
    windows = (short - 1) // total  # whole windows of every account, skipped in one step
    short -= windows * total
    offset = windows * WINDOW_S
    for _ in range(2):  # at most one more round of refills covers what is left
        for reset_in, capacity in refills:
            if short <= capacity:
                return offset + reset_in, short
            short -= capacity
        offset += WINDOW_S
    raise AssertionError("unreachable: a round of refills covers at most the total")


def eta_seconds(
    left: Mapping[str, int],
    pages_done: int,
    elapsed: float,
    quotas: Mapping[str, Sequence[AccountQuota]],
) -> float | None:
    """Seconds until the batch is done, at the pages-per-second seen so far, waiting for resets.

    For each resource whose quota above the reserves cannot pay for the pages left, the batch
    ends no sooner than the reset whose refill pays for the last of them (an hour later for each
    further window the work needs), plus the time to read the pages that refill pays for. A
    reset that comes before the quota runs dry costs no wait. None until a page was read (no
    rate yet), or when the work can never be paid (every limit at or under the reserve).
    A resource without any quota record yet adds nothing: nothing is known of it.
    """
    if pages_done <= 0 or elapsed <= 0:
        return None
    per_page = elapsed / pages_done
    finish = sum(left.values()) * per_page
    for resource, need in quota_cost(left).items():
        accounts = quotas.get(resource) or ()
        have = sum(a.available for a in accounts)
        if not accounts or need <= have:
            continue
        paid = _paid_from(need - have, accounts)
        if paid is None:
            return None
        at, units_after = paid
        per_unit = PAGES_PER_QUERY if resource == "graphql" else 1
        # the pages the units spent before that reset pay for are read by then
        pages_after = max(0, left.get(resource, 0) - (need - units_after) * per_unit)
        finish = max(finish, at + pages_after * per_page)
    return finish


def progress_line(
    *,
    slot: int,
    batch: int,
    state: Mapping,
    pages: int,
    users: int,
    elapsed: float,
    quota_by_account: Mapping[str, Mapping[str, QuotaState | None]],
    reserve: int,
    now: float,
    final: bool,
) -> str:
    """The fetch slot's progress line: where the batch is, the pages read in it, the user records
    the slot staged, the quota left per account, and the ETA of the batch."""
    quotas: dict[str, list[AccountQuota]] = {}
    parts = []
    for account, states in quota_by_account.items():
        known = []
        for resource, q in (states or {}).items():
            if q is None:
                continue
            quotas.setdefault(resource, []).append(account_quota(q, reserve, now))
            known.append(f"{resource} {q.available(now):,}")
        parts.append(f"{account}: {', '.join(known) or 'not known yet'}")
    left = remaining_pages(state)
    todo = sum(left.values())
    eta = eta_seconds(left, pages, elapsed, quotas)
    where = "batch done" if final and not todo else f"reading {current_list(state)}"
    return (
        f"slot {slot}, batch {batch}: {where}; {pages} page(s) read in this batch; {users:,} user "
        f"record(s) staged by this slot; quota left ({'; '.join(parts) or 'no record'}); about "
        f"{todo} page(s) left ({left['core']} REST, {left['graphql']} GraphQL), ETA "
        f"{duration(eta) if todo else 'done'}"
    )


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown yet"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
