"""Airflow hook for GitHub: reads the ``github_default`` connection and builds the client.

Connection fields:

- host: the REST base URL: ``https://api.github.com``, a GitHub Enterprise
  ``https://ghe.example.com/api/v3``, or the emulator ``http://127.0.0.1:8765``;
- password: a token;
- extra (JSON), all optional: ``tokens`` (list of more tokens, or one comma-separated string),
  ``reserve`` (units left untouched on every token, default 50), ``timeout`` (read timeout in
  seconds, default 30), ``max_inline_wait`` (longest wait inside a worker, default 30 s),
  ``rest_per_minute`` / ``graphql_per_minute`` (requests per token and minute, default 720 and
  1600: 80% of GitHub's secondary limits; 0 turns pacing off), ``pace_window`` (seconds the
  per-minute rates are counted over, default 60; an emulator with shorter windows uses less).

The quota records and the token pool live in Redis (``redis_default``).
"""

from __future__ import annotations

import json
import logging
import time
from functools import cached_property
from typing import Any

import requests
from airflow.providers.common.compat.sdk import BaseHook

from github_collector.client import GitHubClient, auth_headers, validate_base_url
from github_collector.errors import ConfigError, GitHubUnavailable
from github_collector.etag_cache import EtagCache
from github_collector.quota import DEFAULT_PACE, QuotaStore, fingerprint

log = logging.getLogger(__name__)
DEFAULT_BASE_URL = "https://api.github.com"
DEFAULT_PREFIX = "ghc:"
CONNECT_TIMEOUT = 5.0


def _mask(value: str) -> None:
    """Tell Airflow's log masker about a secret that did not come from a password field."""
    from airflow.providers.common.compat.sdk import mask_secret  # airflow.sdk.log on 3.x, utils.log on 2.x

    mask_secret(value)


def parse_settings(
    host: str | None,
    password: str | None,
    extra: str | dict | None,
    schema: str | None = None,
    port: int | None = None,
) -> dict[str, Any]:
    """Turn connection fields into client settings, with errors that name the bad field."""
    if isinstance(extra, str):
        try:
            extra = json.loads(extra) if extra.strip() else {}
        except ValueError:
            raise ConfigError("the github connection's extra is not valid JSON") from None
    extra = dict(extra or {})
    base = (host or "").strip() or DEFAULT_BASE_URL
    if "://" not in base:
        base = f"https://{base}{f':{port}' if port else ''}{'/' + schema.strip('/') if schema else ''}"
    base = validate_base_url(base)
    tokens: list[str] = [password] if password else []
    more = extra.get("tokens") or []
    if isinstance(more, str):
        more = [t for t in more.split(",")]
    if not isinstance(more, list):
        raise ConfigError("the github connection's extra 'tokens' must be a list of strings")
    tokens += [str(t).strip() for t in more if str(t).strip()]
    if not tokens:
        raise ConfigError("the github connection has no token: set its password (or extra 'tokens')")

    def _number(key: str, default: float, lo: float, hi: float) -> float:
        raw = extra.get(key, default)
        try:
            val = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(
                f"the github connection's extra {key!r} must be a number, got {raw!r}"
            ) from None
        if not lo <= val <= hi:
            raise ConfigError(f"the github connection's extra {key!r}={raw!r} is outside {lo}..{hi}")
        return val

    return {
        "base_url": base,
        "tokens": tokens,
        "reserve": int(_number("reserve", 50, 0, 100_000)),
        "timeout": _number("timeout", 30, 1, 600),
        "max_inline_wait": _number("max_inline_wait", 30, 0, 900),
        "per_minute": {
            "core": int(_number("rest_per_minute", DEFAULT_PACE["core"], 0, 100_000)),
            "graphql": int(_number("graphql_per_minute", DEFAULT_PACE["graphql"], 0, 100_000)),
        },
        "pace_window": _number("pace_window", 60, 0.1, 3600),
    }


class GitHubHook(BaseHook):
    conn_name_attr = "github_conn_id"
    default_conn_name = "github_default"
    conn_type = "github_repo_users"
    hook_name = "GitHub (quota-aware)"

    def __init__(
        self,
        github_conn_id: str = default_conn_name,
        redis_conn_id: str = "redis_default",
        key_prefix: str = DEFAULT_PREFIX,
        reservation_id: str | None = None,
    ) -> None:
        super().__init__()
        self.github_conn_id = github_conn_id
        self.redis_conn_id = redis_conn_id
        self.key_prefix = key_prefix
        self.reservation_id = reservation_id

    @cached_property
    def settings(self) -> dict[str, Any]:
        try:
            conn = self.get_connection(self.github_conn_id)
        except Exception as exc:
            raise ConfigError(
                f"Airflow connection {self.github_conn_id!r} is missing or unreadable ({type(exc).__name__}); "
                "create it with the GitHub base URL as host and a token as password"
            ) from None
        try:
            settings = parse_settings(conn.host, conn.password, conn.extra, conn.schema, conn.port)
        except ConfigError as exc:
            raise ConfigError(f"Airflow connection {self.github_conn_id!r}: {exc}") from None
        for t in settings["tokens"]:
            _mask(t)
        return settings

    @cached_property
    def redis(self):
        from airflow.providers.redis.hooks.redis import RedisHook

        return RedisHook(redis_conn_id=self.redis_conn_id).get_conn()

    def get_quota_store(self) -> QuotaStore:
        s = self.settings
        return QuotaStore(
            self.redis,
            prefix=self.key_prefix,
            reserve=s["reserve"],
            per_minute=s["per_minute"],
            pace_window_s=s["pace_window"],
            # a lease outlives the longest request (connect + read timeout), not much more
            lease_ttl_ms=int((CONNECT_TIMEOUT + s["timeout"] + 10) * 1000),
        )

    def get_conn(self) -> GitHubClient:
        """Build the client lazily: nothing is read or connected before a task runs."""
        if getattr(self, "_client", None) is None:
            s = self.settings
            self._client = GitHubClient(
                s["base_url"],
                s["tokens"],
                self.get_quota_store(),
                EtagCache(self.redis, prefix=self.key_prefix),
                timeout=(CONNECT_TIMEOUT, s["timeout"]),
                max_inline_wait=s["max_inline_wait"],
                reservation_id=self.reservation_id,
            )
        return self._client

    def check_tokens(self, quota: QuotaStore | None = None) -> list[str]:
        """Ask GET /rate_limit (free) with every token; nothing is stored anywhere.

        With ``quota`` (the pool's store), each request holds its token's lease, as every
        request of the client does: other runs' workers may be using the same tokens right
        now. A token cooling down after a secondary limit is not asked (and counts as
        accepted: GitHub answered it, and will again once it rests).

        Returns the fingerprints of the tokens GitHub accepted. Raises ConfigError when GitHub
        accepts none, or the base URL does not answer like GitHub's REST API, and
        GitHubUnavailable when it cannot be reached (which a retry may cure).
        """
        s = self.settings
        accepted, rejected = [], []
        url = s["base_url"] + "/rate_limit"
        for token in s["tokens"]:
            fp = fingerprint(token)
            lease = quota.lease_token(fp) if quota is not None else None
            if quota is not None and lease is None:
                log.info("token %s is cooling down or busy: not checked now", fp)
                accepted.append(fp)
                continue
            try:
                resp = self._get_with_retries(url, token)
            finally:
                if lease is not None:
                    quota.release(lease)
            if resp.status_code == 401:
                rejected.append(fingerprint(token))
            elif resp.status_code == 200:
                accepted.append(fingerprint(token))
            else:
                raise ConfigError(
                    f"GET {url} answered HTTP {resp.status_code}: is {s['base_url']!r} the REST API root "
                    "(https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise)?"
                )
        if not accepted:
            raise ConfigError(
                f"GitHub rejected every token of connection {self.github_conn_id!r} "
                f"(401 Bad credentials; fingerprints {rejected}): replace them"
            )
        if rejected:
            log.warning(
                "GitHub rejected token(s) %s of connection %r (401); the run goes on with %s",
                rejected,
                self.github_conn_id,
                accepted,
            )
        return accepted

    def _get_with_retries(self, url: str, token: str, attempts: int = 4) -> requests.Response:
        """GET with a few retries of timeouts and 5xx (GitHub has bad seconds), then give up."""
        problem = ""
        for attempt in range(1, attempts + 1):
            try:
                resp = requests.get(
                    url, headers=auth_headers(token), timeout=(CONNECT_TIMEOUT, self.settings["timeout"])
                )
            except requests.RequestException as exc:
                problem = f"cannot reach GitHub at {self.settings['base_url']} ({type(exc).__name__})"
            else:
                if resp.status_code < 500:
                    return resp
                problem = f"GET {url} answered HTTP {resp.status_code}"
            if attempt < attempts:
                time.sleep(2 ** (attempt - 1))
        raise GitHubUnavailable(problem)

    def test_connection(self) -> tuple[bool, str]:
        """The Airflow UI's connection test."""
        try:
            accepted = self.check_tokens()
        except (ConfigError, GitHubUnavailable) as exc:
            return False, str(exc)
        return True, f"GitHub accepted {len(accepted)} of {len(self.settings['tokens'])} token(s)"
