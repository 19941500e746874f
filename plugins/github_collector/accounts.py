"""Which GitHub account each token belongs to: GitHub's quota and secondary limits are per account.

Two personal tokens of one user share one 5,000/h budget and one concurrency limit, so the
pool must treat them as one. ``GET /user`` names a token's account; the answer is cached in
Redis under the token's fingerprint for a month (an account never changes for a token), so
each token costs that one request once, not per run. Tokens for which GET /user cannot tell
(403 for some token kinds, e.g. App installation tokens; 404) are their own account.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from typing import Any

import requests

from github_collector import limits
from github_collector.quota import QuotaStore

log = logging.getLogger(__name__)

TRANSIENT = (500, 502, 503, 504)


def account_from_user(body: Any) -> str | None:
    """The account key of a GET /user answer: its numeric id (stable across renames)."""
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("id"), int):
        return f"id{body['id']}"
    login = body.get("login")
    return f"login-{str(login).lower()}" if login else None


def resolve_accounts(
    store: QuotaStore,
    session: Any,
    base_url: str,
    headers_for: Mapping[str, dict[str, str]],
    *,
    timeout: tuple[float, float] | float,
    policy: limits.LimitPolicy,
    attempts: int = 3,
    backoff_base: float = 1.0,
    max_wait: float = 10.0,
) -> dict[str, int | str]:
    """Make sure every token's account is known before the token is used for anything else.

    ``headers_for``: fingerprint -> request headers (with the token). Cached accounts are read
    in one round trip; the rest are asked with GET /user, holding the token's lease like any
    request. Returns, per token asked, the HTTP status met (or ``"unreachable"``/``"busy"``):
    a 401 here is only a hint, the caller's own check decides about it. A limit answer is
    waited out when shorter than ``max_wait`` and asked again; a token still unresolved
    after that is left to the caller (``QuotaStore.is_resolved``).
    """
    fps = list(headers_for)
    outcome: dict[str, int | str] = {}
    for fp in store.load_accounts(fps):
        outcome[fp] = _ask(
            store, session, base_url, fp, headers_for[fp], timeout, policy, attempts, backoff_base, max_wait
        )
    groups = store.accounts(fps)
    for group in groups.values():
        if len(group) > 1:
            log.warning(
                "tokens %s belong to one GitHub account: they share one quota and one request at a "
                "time, so they count as one (remove the duplicates from the github connection)",
                group,
            )
    return outcome


def _ask(
    store: QuotaStore,
    session: Any,
    base_url: str,
    fp: str,
    headers: dict[str, str],
    timeout: tuple[float, float] | float,
    policy: limits.LimitPolicy,
    attempts: int,
    backoff_base: float,
    max_wait: float,
) -> int | str:
    outcome: int | str = "unreachable"
    for attempt in range(1, attempts + 1):
        lease = store.lease_token(fp)
        if lease is None:
            return "busy"  # cooling down after a limit: asked again by the next run
        record = None
        cool_until = None
        status = 0
        try:
            resp = session.get(base_url + "/user", headers=headers, timeout=timeout, allow_redirects=False)
        except requests.RequestException:
            outcome = "unreachable"
        else:
            status = outcome = resp.status_code
            body, answer = limits.read_answer("core", resp)
            if answer is not None:
                cool_until = time.time() + limits.wait_seconds(answer, policy, 1, time.time())
                if not store.is_resolved(fp):
                    # Whose limit this is, nobody knows yet: it may be any other token's
                    # account, so no token sends before GitHub's wait is over.
                    store.hold_pool(cool_until)
            elif status == 200 and (account := account_from_user(body)):
                store.set_account(fp, account)
                record = QuotaStore.headers_state(resp.headers, "core")
            elif status == 403:
                store.set_account(fp, None)  # e.g. an App installation token: its own account
            elif status == 404:
                # Not cached: a wrong base URL answers 404 too, and is fixed by the next run.
                store.treat_as_own(fp)
        finally:
            store.settle(lease, "core", None, cool_until, limited=cool_until is not None)
        if record is not None:
            store.set_state(fp, *record)  # under the account just learnt
        if cool_until is not None:
            wait = cool_until - time.time()
            if wait > max_wait or attempt == attempts:
                return outcome  # still unknown: the caller keeps the token out until it is known
            time.sleep(max(wait, 0) + 0.01)  # GitHub's wait, then ask again
            continue
        if status not in TRANSIENT and outcome != "unreachable":
            return outcome
        if attempt < attempts:
            time.sleep(min(30.0, backoff_base * 2 ** (attempt - 1)) * (0.5 + random.random() / 2))
    return outcome
