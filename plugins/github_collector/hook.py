"""Airflow hook for GitHub: reads the ``github_default`` connection and builds the client.

Connection fields:

- host: the REST base URL: ``https://api.github.com``, a GitHub Enterprise
  ``https://ghe.example.com/api/v3``, or the emulator ``http://127.0.0.1:8765``;
- password: a token;
- extra (JSON), all optional: ``tokens`` (list of more tokens, or one comma-separated string),
  ``reserve`` (units left untouched on every token, default 50), ``timeout`` (read timeout in
  seconds, default 30), ``max_inline_wait`` (longest wait inside a worker, default 30 s), ``resume_lead`` (a
  deferral for quota ends this many seconds before the reset and the resumed task sleeps the
  rest, so Airflow's resume latency does not delay the first request; default 3 s, 0 to end
  deferrals at the reset; waits this short are always slept),
  ``rest_per_minute`` / ``graphql_per_minute`` (requests per token and minute, default 720 and
  1600: 80% of GitHub's secondary limits; 0 turns pacing off), ``pace_window`` (seconds the
  per-minute rates are counted over, default 60; an emulator with shorter windows uses less),
  ``secondary_default_wait`` (seconds an account rests after a secondary limit without
  retry-after, default 60, doubled on repeats), ``graphql_min_gap`` (least pause between an
  account's GraphQL queries, default 0; the pause is also 0.18 x the last query's duration).
  An extra present but null or empty counts as absent (Airflow's connection form saves empty
  fields that way).
- GitHub App (optional, with or without tokens): ``app_id`` (the App's id), ``private_key``
  (its PEM private key) and ``installation_id`` (one id, or several comma-separated; without
  it each repository owner's installation is found with GET /repos/{owner}/{repo}/installation).
  Each installation joins the token pool as its own quota account, ``installation:<id>``; its
  tokens are bought with a JWT and renewed before they expire, in memory only (``app_auth.py``).

Connections of the official GitHub provider's type (``github``: the token in the password, an
optional GitHub Enterprise API URL such as ``https://HOST/api/v3`` in the host) read the same.
The connection form is described in ``connection_form.py``.

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

from github_collector import connection_form, limits
from github_collector.accounts import resolve_accounts
from github_collector.app_auth import AppCredentials, InstallationToken, find_installations
from github_collector.client import GitHubClient, auth_headers, validate_base_url
from github_collector.errors import ConfigError, GitHubUnavailable, InstallationUnavailable
from github_collector.etag_cache import EtagCache
from github_collector.limits import LimitPolicy
from github_collector.quota import DEFAULT_PACE, QuotaStore, fingerprint

log = logging.getLogger(__name__)
DEFAULT_BASE_URL = "https://api.github.com"
DEFAULT_PREFIX = "ghc:"
CONNECT_TIMEOUT = 5.0
# The UI's connection test: one attempt per token, answered within seconds or reported.
PROBE_TIMEOUT = (3.0, 10.0)
UNAUTHORIZED_RECHECK_WAIT = 2.0  # a 401 is asked once more after this pause before it counts


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
    # A key saved empty by the connection form is absent, not a value.
    extra = {
        k: v
        for k, v in dict(extra or {}).items()
        if v is not None and not (isinstance(v, str) and not v.strip())
    }
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
    app = _parse_app(extra)
    if not tokens and app is None:
        raise ConfigError(
            "the github connection has no token: set its password (or extra 'tokens'), or a GitHub "
            "App (extra 'app_id' and 'private_key')"
        )

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
        "app": app,
        "reserve": int(_number("reserve", 50, 0, 100_000)),
        "timeout": _number("timeout", 30, 1, 600),
        "max_inline_wait": _number("max_inline_wait", 30, 0, 900),
        "resume_lead": _number("resume_lead", 3, 0, 60),
        "per_minute": {
            "core": int(_number("rest_per_minute", DEFAULT_PACE["core"], 0, 100_000)),
            "graphql": int(_number("graphql_per_minute", DEFAULT_PACE["graphql"], 0, 100_000)),
        },
        "pace_window": _number("pace_window", 60, 0.1, 3600),
        "secondary_default_wait": _number("secondary_default_wait", 60, 1, 3600),
        "graphql_min_gap": _number("graphql_min_gap", 0, 0, 60),
    }


def _parse_app(extra: dict[str, Any]) -> AppCredentials | None:
    """The GitHub App extras, all or none: errors name the missing or bad field (never the key)."""
    given = [k for k in connection_form.APP_FIELDS if k in extra]
    if not given:
        return None
    for key in ("app_id", "private_key"):
        if key not in extra:
            raise ConfigError(
                f"the github connection sets {', '.join(repr(k) for k in given)} but not {key!r}: "
                "a GitHub App needs its app_id and private_key"
            )
    app_id = str(extra["app_id"]).strip()
    if not app_id.isdigit() and not app_id.startswith("Iv"):
        raise ConfigError(
            f"the github connection's extra 'app_id'={app_id!r} is not a GitHub App id (a number) "
            "or client id (Iv...)"
        )
    key = str(extra["private_key"]).strip()
    if "\\n" in key and "\n" not in key:
        key = key.replace("\\n", "\n").strip()  # a PEM pasted as one line with literal \n
    if "PRIVATE KEY-----" not in key:
        raise ConfigError(
            "the github connection's extra 'private_key' is not a PEM private key: paste the whole "
            "file GitHub generated for the App, BEGIN and END lines included"
        )
    raw = extra.get("installation_id")
    ids: list[int] = []
    if raw is not None:
        parts = raw if isinstance(raw, list) else str(raw).split(",")
        for part in parts:
            text = str(part).strip()
            if not text:
                continue
            if not text.isdigit() or int(text) <= 0:
                raise ConfigError(
                    f"the github connection's extra 'installation_id'={raw!r} must be a positive "
                    "integer or several, comma-separated"
                )
            ids.append(int(text))
    return AppCredentials(app_id, key, tuple(dict.fromkeys(ids)))


class GitHubHook(BaseHook):
    conn_name_attr = "github_conn_id"
    default_conn_name = "github_default"
    conn_type = connection_form.CONN_TYPE
    hook_name = connection_form.HOOK_NAME

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
        if settings["app"] is not None:
            _mask(settings["app"].private_key)
        return settings

    def installations(self, repos: list[str] | None = None) -> list[InstallationToken]:
        """The GitHub App's installations for these repositories (configured ids, else each
        owner's installation), as pool members; [] without an App. Found once per hook."""
        s = self.settings
        app: AppCredentials | None = s["app"]
        if app is None:
            return []
        if getattr(self, "_installations", None) is None:
            timeout = (CONNECT_TIMEOUT, s["timeout"])
            ids, missing = find_installations(s["base_url"], app, repos, timeout=timeout)
            if missing:
                log.warning(
                    "GitHub App %s is not installed on %s: their public repositories are read with "
                    "the pool's other tokens and installations",
                    app.app_id,
                    ", ".join(sorted(missing)),
                )
            if not ids and not s["tokens"]:
                raise ConfigError(
                    f"GitHub App {app.app_id} has no installation"
                    + (f" on {', '.join(sorted(missing))}" if missing else "")
                    + ": install it on the repositories' owners, set 'installation_id', or add a token"
                )
            self._installations = [InstallationToken(s["base_url"], app, iid, timeout=timeout) for iid in ids]
        return list(self._installations)

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

    def get_conn(self, repos: list[str] | None = None) -> GitHubClient:
        """Build the client lazily: nothing is read or connected before a task runs.

        ``repos`` (the run's repositories) tell which GitHub App installations to use when the
        connection names none."""
        if getattr(self, "_client", None) is None:
            s = self.settings
            self._client = GitHubClient(
                s["base_url"],
                s["tokens"],
                self.get_quota_store(),
                EtagCache(self.redis, prefix=self.key_prefix),
                timeout=(CONNECT_TIMEOUT, s["timeout"]),
                max_inline_wait=s["max_inline_wait"],
                secondary_default_wait=s["secondary_default_wait"],
                graphql_min_gap=s["graphql_min_gap"],
                reservation_id=self.reservation_id,
                installations=self.installations(repos),
            )
        return self._client

    def check_tokens(self, quota: QuotaStore | None = None, repos: list[str] | None = None) -> list[str]:
        """Ask GET /rate_limit (free) with every token; only the pool's own marks are written.

        With ``quota`` (the pool's store), each token's account is learnt first (GET /user,
        once per token: the answer is cached), and each request holds its account's lease, as
        every request of the client does: other runs' workers may be using the same accounts
        right now. A token whose account is cooling down after a limit answer is not asked (and
        counts as accepted: GitHub answered it, and will again once it rests). A limit answer
        here keeps the account off like any other.

        A 401 is asked once more after a short pause: only a second one rejects the token (and
        marks it so in the pool). A 200 clears any such mark: a token GitHub accepts again,
        or a connection fixed since, works at once.

        A GitHub App's installations (for ``repos``, see ``installations``) are checked the same
        way, each with a token bought for it; one GitHub sells no token for is reported by its
        installation id and left out of the run (an error when nothing else is left).

        Returns the fingerprints of the tokens GitHub accepted. Raises ConfigError when GitHub
        accepts none, or the base URL does not answer like GitHub's REST API, and
        GitHubUnavailable when it cannot be reached (which a retry may cure).
        """
        s = self.settings
        accepted, rejected = [], []
        unavailable: list[str] = []
        url = s["base_url"] + "/rate_limit"
        for inst in self.installations(repos):
            if quota is not None:
                quota.set_account(inst.name, inst.account)
            try:
                status = self._check_one(url, inst, quota)
                if status == 401:  # expired or revoked since bought: a fresh one decides
                    inst.invalidate()
                    status = self._check_one(url, inst, quota)
            except InstallationUnavailable as exc:
                unavailable.append(str(exc))
                rejected.append(inst.name)
                continue
            if status in (0, 200):
                accepted.append(inst.name)
                if status == 200 and quota is not None and quota.clear_rejected(inst.name):
                    log.info("GitHub App installation %s works again", inst.installation_id)
            elif status == 401:
                rejected.append(inst.name)
            else:
                raise ConfigError(
                    f"GET {url} answered HTTP {status}: is {s['base_url']!r} the REST API root "
                    "(https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise)?"
                )
        if quota is not None:
            resolve_accounts(
                quota,
                requests,
                s["base_url"],
                {fingerprint(t): auth_headers(t) for t in s["tokens"]},
                timeout=(CONNECT_TIMEOUT, s["timeout"]),
                policy=LimitPolicy(secondary_default_wait=s["secondary_default_wait"]),
            )
        for token in s["tokens"]:
            fp = fingerprint(token)
            status = self._check_one(url, token, quota)
            if status == 401:
                time.sleep(UNAUTHORIZED_RECHECK_WAIT)  # one 401 may be GitHub's hiccup: ask again
                status = self._check_one(url, token, quota)
            if status == 401:
                rejected.append(fp)
            elif status in (0, 200):  # 0: cooling down or busy, not asked now
                accepted.append(fp)
                if status == 200 and quota is not None and quota.clear_rejected(fp):
                    log.info("token %s works again: its 401 mark is cleared", fp)
            else:
                raise ConfigError(
                    f"GET {url} answered HTTP {status}: is {s['base_url']!r} the REST API root "
                    "(https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise)?"
                )
        if not accepted:
            raise ConfigError(
                f"GitHub rejected every token of connection {self.github_conn_id!r} "
                f"(401 Bad credentials; fingerprints {rejected})"
                + (f"; {'; '.join(unavailable)}" if unavailable else "")
                + ": replace them"
            )
        for why in unavailable:
            log.warning("%s; the run goes on with %s", why, accepted)
        if quota is not None:
            for fp in rejected:  # the run goes on without them: its fetches skip them at once
                quota.mark_rejected(fp)
        if rejected:
            log.warning(
                "GitHub rejected token(s) %s of connection %r (401); the run goes on with %s",
                rejected,
                self.github_conn_id,
                accepted,
            )
        return accepted

    def _check_one(self, url: str, token: str | InstallationToken, quota: QuotaStore | None) -> int:
        """One GET /rate_limit under the account's lease; 0 if the account may not send now.
        A limit answer counts as accepted (200) after keeping the account off."""
        fp = token.name if isinstance(token, InstallationToken) else fingerprint(token)
        lease = quota.lease_token(fp) if quota is not None else None
        if quota is not None and lease is None:
            log.info("token %s's account is cooling down or busy: not checked now", fp)
            return 0
        cool_until = None
        try:
            resp = self._get_with_retries(url, token)
            _, answer = limits.read_answer("core", resp)
            if answer is not None:
                policy = LimitPolicy(secondary_default_wait=self.settings["secondary_default_wait"])
                cool_until = time.time() + limits.wait_seconds(answer, policy, 1, time.time())
                log.warning("%s for token %s during the check: its account rests", answer.reason, fp)
        finally:
            if lease is not None:
                quota.settle(lease, "core", None, cool_until, limited=cool_until is not None)
        return 200 if cool_until is not None else resp.status_code

    def _get_with_retries(
        self, url: str, token: str | InstallationToken, attempts: int = 4
    ) -> requests.Response:
        """GET with a few retries of timeouts and 5xx (GitHub has bad seconds), then give up."""
        problem = ""
        for attempt in range(1, attempts + 1):
            value = token.value() if isinstance(token, InstallationToken) else token
            try:
                resp = requests.get(
                    url,
                    headers=auth_headers(value),
                    timeout=(CONNECT_TIMEOUT, self.settings["timeout"]),
                    allow_redirects=False,  # the token goes to the configured host only
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

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The extra fields of the connection form, for Airflow versions that build it from the
        hook (2.x); newer ones read the same fields from the provider info's ``conn-fields``."""
        from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import IntegerField, PasswordField, StringField
        from wtforms.validators import Optional

        # Only IntegerField, PasswordField, StringField and BooleanField are accepted by
        # Airflow's ProvidersManager; any other class drops the whole hook from the UI.
        # Decimal seconds therefore go through a StringField; parse_settings checks them.
        widgets: dict[str, Any] = {}
        for f in connection_form.FIELDS:
            label, kwargs = lazy_gettext(f.label), {"description": f.description, "validators": [Optional()]}
            if f.kind == "password":
                widgets[f.key] = PasswordField(label, widget=BS3PasswordFieldWidget(), **kwargs)
            elif f.kind == "integer":
                widgets[f.key] = IntegerField(label, widget=BS3TextFieldWidget(), **kwargs)
            else:
                widgets[f.key] = StringField(label, widget=BS3TextFieldWidget(), **kwargs)
        return widgets

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Hide the fields this connection does not use and name the ones it does."""
        return {
            "hidden_fields": list(connection_form.HIDDEN_FIELDS),
            "relabeling": dict(connection_form.RELABELING),
            "placeholders": dict(connection_form.PLACEHOLDERS),
        }

    def test_connection(self) -> tuple[bool, str]:
        """The Airflow UI's connection test: one attempt per token, short timeouts, no sleep.

        Says which tokens GitHub accepts (by fingerprint, never the token) and what each has
        left. Succeeds only when every token works. Touches neither Redis nor the quota pool.
        """
        try:
            s = self.settings
        except ConfigError as exc:
            return False, str(exc)
        lines = [_probe(s["base_url"], token) for token in s["tokens"]]
        if s["app"] is not None:
            try:
                found = self.installations()
            except (ConfigError, GitHubUnavailable) as exc:
                lines.append((False, f"GitHub App {s['app'].app_id}: {exc}"))
                found = []
            for inst in found:
                try:
                    ok, line = _probe(s["base_url"], inst.value(), name=inst.name)
                except (InstallationUnavailable, ConfigError, GitHubUnavailable) as exc:
                    ok, line = False, f"{inst.name}: {exc}"
                lines.append((ok, line))
        good = sum(1 for ok, _ in lines if ok)
        what = "token(s) or App installation(s)" if s["app"] is not None else "token(s)"
        head = f"GitHub at {s['base_url']}: {good} of {len(lines)} {what} work"
        return good == len(lines), "; ".join([head, *(line for _, line in lines)])


def _probe(base_url: str, token: str, name: str | None = None) -> tuple[bool, str]:
    """One token, one attempt: GET /rate_limit (free), then GET /user for its login."""
    fp = name or fingerprint(token)
    try:
        resp = requests.get(f"{base_url}/rate_limit", headers=auth_headers(token), timeout=PROBE_TIMEOUT)
    except requests.RequestException as exc:
        return False, f"token {fp}: no answer ({type(exc).__name__})"
    if resp.status_code == 401:
        return False, f"token {fp}: rejected (401 Bad credentials)"
    if resp.status_code != 200:
        hint = (
            " (is the host the REST API root, e.g. https://HOST/api/v3?)" if resp.status_code == 404 else ""
        )
        return False, f"token {fp}: GET /rate_limit answered HTTP {resp.status_code}{hint}"
    try:
        resources = resp.json().get("resources") or {}
        left = ", ".join(
            f"{r} {resources[r]['remaining']} left" for r in ("core", "graphql") if r in resources
        )
    except (ValueError, AttributeError, KeyError, TypeError):
        left = "quota unreadable"
    login = ""
    try:  # costs one core unit; an App installation token gets 403 here, which is no failure
        user = requests.get(f"{base_url}/user", headers=auth_headers(token), timeout=PROBE_TIMEOUT)
        if user.status_code == 200:
            login = f" ({user.json().get('login')})"
    except (requests.RequestException, ValueError, AttributeError):
        pass
    return True, f"token {fp}{login}: {left or 'works'}"
