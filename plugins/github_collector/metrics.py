"""Metrics through Airflow's ``Stats``: StatsD or OpenTelemetry, whichever the deployment set up.

Every name is in ``METRICS``; the README's metrics table lists the same names, and a test
checks both that the table matches and that each name is emitted. A name part in ``<...>``
(account, resource, kind, table) is filled at emission and also sent as a tag, so plain
StatsD, which drops tags, still tells the series apart. An account is its key in the quota
store (GitHub's account id, or the token's fingerprint while unknown): never a token.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

PREFIX = "github_repo_users"

# name (after the prefix) -> kind
METRICS: dict[str, str] = {
    "quota_remaining.<resource>.<account>": "gauge",
    "requests": "counter",
    "not_modified": "counter",
    "secondary_hits": "counter",
    "deferrals": "counter",
    "pages_staged": "counter",
    "users_staged": "counter",
    "commit_rows.<kind>": "counter",
    "table_rows.<table>": "gauge",
}

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _stats():
    # The compat module finds Stats on Airflow 3.x (airflow.sdk) and 2.x (airflow.stats) alike.
    from airflow.providers.common.compat.sdk import Stats

    return Stats


def metric_name(template: str, **parts: str) -> str:
    name = template
    for key, value in parts.items():
        name = name.replace(f"<{key}>", _UNSAFE.sub("_", str(value)))
    if template not in METRICS or "<" in name:
        raise KeyError(f"undocumented metric or missing part: {template} {parts}")
    return f"{PREFIX}.{name}"


def incr(template: str, count: int = 1, **parts: str) -> None:
    if count < 0:
        return  # a zero is sent: it makes the series exist before its first event
    name = metric_name(template, **parts)  # an undocumented name fails, here and in tests
    try:
        _stats().incr(name, count, tags=dict(parts))
    except Exception:  # a metrics backend must never fail a collection
        log.debug("metric %s not sent", template, exc_info=True)


def gauge(template: str, value: float, **parts: str) -> None:
    name = metric_name(template, **parts)
    try:
        _stats().gauge(name, value, tags=dict(parts))
    except Exception:
        log.debug("metric %s not sent", template, exc_info=True)


class ClientCounters:
    """Sends what a client's ``ClientStats`` counted since the last call, as counter increments."""

    FIELDS: Mapping[str, str] = {
        "requests": "requests",
        "not_modified": "not_modified",
        "secondary_hits": "secondary_hits",
    }

    def __init__(self) -> None:
        self._sent: dict[str, int] = dict.fromkeys(self.FIELDS, 0)

    def flush(self, stats: object) -> None:
        for field, name in self.FIELDS.items():
            now = int(getattr(stats, field))
            incr(name, now - self._sent[field])
            self._sent[field] = now


def quota_gauges(snapshot: Mapping[str, Mapping[str, object]], accounts: Mapping[str, list[str]]) -> None:
    """One gauge per account and resource, read from the quota store's records."""
    for account, fps in accounts.items():
        for resource, state in (snapshot.get(fps[0]) or {}).items():
            if state is not None:
                gauge(
                    "quota_remaining.<resource>.<account>",
                    int(state.remaining),
                    resource=resource,
                    account=account,
                )
