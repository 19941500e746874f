"""GitHub App authentication: a JWT signed with the App's private key buys installation tokens.

- The JWT (PyJWT, RS256) carries ``iss`` = the App id, ``iat`` 60 s in the past (GitHub's advice
  against clock drift) and ``exp`` 9 minutes after ``iat`` (GitHub refuses more than 10).
- Each installation is one member of the token pool, named ``app<app id>-inst<installation id>``:
  a name, not a digest of any token, so nothing about a token can be read from it. Its quota
  account is ``installation:<id>``: an installation is its own budget on GitHub, and GET /user,
  which names a personal token's account, answers 403 to an installation token.
- Installation tokens live in this process's memory only (never in Redis, XCom or logs). One is
  bought when first needed and again ``REFRESH_MARGIN`` seconds before its ``expires_at``
  (GitHub: 1 hour), or at once after GitHub answered 401 to it.
- Installations come from the connection (``installation_id``), or are found per repository
  owner: ``GET /repos/{owner}/{repo}/installation``; without repositories, the App's own list
  (``GET /app/installations``).

Every request has a timeout; each purchase is tried a bounded number of times with backoff.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import requests

from github_collector.errors import ConfigError, GitHubUnavailable, InstallationUnavailable

log = logging.getLogger(__name__)

API_VERSION = "2022-11-28"
USER_AGENT = "github-repo-users-airflow"
JWT_BACKDATE = 60  # GitHub: set iat 60 s in the past to allow for clock drift
JWT_LIFETIME = 540  # seconds after iat; GitHub refuses more than 600
REFRESH_MARGIN = 300.0  # buy a new installation token this long before it expires
MIN_REFRESH_MARGIN_SHARE = 0.25  # short-lived tokens (tests): refresh after 3/4 of their life
TRANSIENT = (500, 502, 503, 504)


@dataclass(frozen=True)
class AppCredentials:
    app_id: str
    private_key: str
    installation_ids: tuple[int, ...] = ()  # configured; empty = found per repository owner

    def __repr__(self) -> str:  # never show the key
        return f"AppCredentials(app_id={self.app_id!r}, installation_ids={self.installation_ids!r})"


def slot_name(app_id: str, installation_id: int) -> str:
    """The pool member of an installation (its 'fingerprint'): ids only, no token material."""
    return f"app{app_id}-inst{installation_id}"


def make_jwt(creds: AppCredentials, now: float | None = None) -> str:
    import jwt  # PyJWT (with cryptography for RS256): part of Airflow's dependencies

    now = int(time.time() if now is None else now)
    payload = {"iat": now - JWT_BACKDATE, "exp": now - JWT_BACKDATE + JWT_LIFETIME, "iss": str(creds.app_id)}
    try:
        return jwt.encode(payload, creds.private_key, algorithm="RS256")
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        # The key itself is never quoted.
        raise ConfigError(
            f"the GitHub App private key of App {creds.app_id} cannot sign a JWT ({type(exc).__name__}): "
            "paste the whole PEM file GitHub generated, BEGIN and END lines included"
        ) from None


def _app_headers(jwt_token: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {jwt_token}",
        "Accept": "application/vnd.github+json",
        "User-Agent": USER_AGENT,
        "X-GitHub-Api-Version": API_VERSION,
    }


def _message(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return ""
    return str(body.get("message", ""))[:200] if isinstance(body, dict) else ""


def _call(
    session: Any,
    method: str,
    url: str,
    creds: AppCredentials,
    timeout: tuple[float, float] | float,
    attempts: int,
    backoff_base: float,
) -> requests.Response:
    """One App request (a fresh JWT each try), retrying transport faults and 5xx, bounded."""
    problem = ""
    for attempt in range(1, attempts + 1):
        try:
            resp = session.request(
                method, url, headers=_app_headers(make_jwt(creds)), timeout=timeout, allow_redirects=False
            )
        except (requests.Timeout, requests.ConnectionError) as exc:
            problem = f"{type(exc).__name__}"
        else:
            if resp.status_code not in TRANSIENT:
                return resp
            problem = f"HTTP {resp.status_code}"
        if attempt < attempts:
            time.sleep(min(30.0, backoff_base * 2 ** (attempt - 1)))
    path = url.split("://", 1)[-1].split("/", 1)[-1]
    raise GitHubUnavailable(
        f"{method} /{path} for GitHub App {creds.app_id}: {problem} after {attempts} tries"
    )


def _refused(status: int, message: str, creds: AppCredentials) -> ConfigError:
    return ConfigError(
        f"GitHub refused the JWT of App {creds.app_id} ({status} {message!r}): check the App id and "
        "that the private key is the App's current one"
    )


class InstallationToken:
    """The token of one installation, bought and renewed on demand, held in memory only."""

    def __init__(
        self,
        base_url: str,
        creds: AppCredentials,
        installation_id: int,
        *,
        session: Any = None,
        timeout: tuple[float, float] | float = (5.0, 30.0),
        attempts: int = 4,
        backoff_base: float = 1.0,
        refresh_margin: float = REFRESH_MARGIN,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.creds = creds
        self.installation_id = int(installation_id)
        self.name = slot_name(creds.app_id, self.installation_id)
        self.account = f"installation:{self.installation_id}"
        self.session = session or requests.Session()
        self.timeout = timeout
        self.attempts = attempts
        self.backoff_base = backoff_base
        self.refresh_margin = refresh_margin
        self._lock = threading.Lock()
        self._value: str | None = None
        self._renew_at = 0.0
        self.bought = 0  # tokens bought by this process (for stats and tests)

    def __repr__(self) -> str:  # never show the token
        return f"InstallationToken({self.name!r})"

    def value(self) -> str:
        """The current token, bought first if there is none or it is about to expire."""
        with self._lock:
            if self._value is None or time.time() >= self._renew_at:
                self._buy()
            assert self._value is not None
            return self._value

    def invalidate(self) -> None:
        """GitHub answered 401 to the current token: the next use buys another."""
        with self._lock:
            self._value = None

    def _buy(self) -> None:
        url = f"{self.base_url}/app/installations/{self.installation_id}/access_tokens"
        resp = _call(self.session, "POST", url, self.creds, self.timeout, self.attempts, self.backoff_base)
        if resp.status_code == 401:
            raise _refused(401, _message(resp), self.creds)
        if resp.status_code == 429 or (resp.status_code == 403 and "rate limit" in _message(resp).lower()):
            # A limit on the App's own requests says nothing about the installation.
            raise GitHubUnavailable(
                f"buying a token for GitHub App installation {self.installation_id} met a rate limit "
                f"(HTTP {resp.status_code}); the task is retried later"
            )
        if resp.status_code in (403, 404):
            # Uninstalled, suspended, or not this App's: GitHub sells no token for it.
            self._value = None
            raise InstallationUnavailable(
                self.installation_id, self.name, f"{resp.status_code} {_message(resp) or 'refused'}"
            )
        try:
            body = resp.json()
            value = str(body["token"])
            expires = dt.datetime.fromisoformat(str(body["expires_at"]).replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError, TypeError):
            raise GitHubUnavailable(
                f"POST /app/installations/{self.installation_id}/access_tokens answered "
                f"HTTP {resp.status_code} without a token and expiry"
            ) from None
        now = time.time()
        life = max(0.0, expires - now)
        margin = min(self.refresh_margin, life * MIN_REFRESH_MARGIN_SHARE)
        self._value = value
        self._renew_at = expires - margin
        self.bought += 1
        _mask(value)
        log.info(
            "bought a token for GitHub App installation %s (expires in %.0f s)", self.installation_id, life
        )


def _mask(value: str) -> None:
    """Tell Airflow's log masker about the token, where Airflow is there (tasks, not the UI)."""
    try:
        from airflow.providers.common.compat.sdk import mask_secret
    except Exception:  # outside Airflow nothing masks, and nothing here logs a token
        return
    mask_secret(value)


def find_installations(
    base_url: str,
    creds: AppCredentials,
    repos: Iterable[str] | None,
    *,
    session: Any = None,
    timeout: tuple[float, float] | float = (5.0, 30.0),
    attempts: int = 4,
    backoff_base: float = 1.0,
) -> tuple[list[int], list[str]]:
    """The installations to use, and the repository owners the App is not installed on.

    Configured ids win. Otherwise one ``GET /repos/{owner}/{repo}/installation`` per owner (an
    installation covers an account); without repositories, every installation of the App.
    """
    if creds.installation_ids:
        return list(creds.installation_ids), []
    session = session or requests.Session()
    base = base_url.rstrip("/")
    if not repos:
        resp = _call(session, "GET", f"{base}/app/installations", creds, timeout, attempts, backoff_base)
        if resp.status_code != 200:
            raise _refused(resp.status_code, _message(resp), creds)
        try:
            return [int(i["id"]) for i in resp.json()], []
        except (ValueError, KeyError, TypeError):
            raise GitHubUnavailable("GET /app/installations answered without installation ids") from None
    found: list[int] = []
    missing: list[str] = []
    seen: set[str] = set()
    for full_name in repos:
        owner = full_name.split("/", 1)[0].lower()
        if owner in seen:
            continue
        seen.add(owner)
        url = f"{base}/repos/{full_name}/installation"
        resp = _call(session, "GET", url, creds, timeout, attempts, backoff_base)
        if resp.status_code == 200:
            try:
                iid = int(resp.json()["id"])
            except (ValueError, KeyError, TypeError):
                raise GitHubUnavailable(
                    f"GET /repos/{full_name}/installation answered without an id"
                ) from None
            if iid not in found:
                found.append(iid)
        elif resp.status_code == 404:
            missing.append(owner)
        elif resp.status_code == 401:
            raise _refused(401, _message(resp), creds)
        else:
            raise GitHubUnavailable(f"GET /repos/{full_name}/installation answered HTTP {resp.status_code}")
    return found, missing
