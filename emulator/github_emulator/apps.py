"""GitHub App endpoints: a JWT signed by the App's private key buys installation tokens.

Routes (authenticated by the App's JWT, not by a token; they cost no quota, as on GitHub):

- ``POST /app/installations/{id}/access_tokens``  201 {"token": "ghs_...", "expires_at": ...}
- ``GET /app/installations``                      the App's installations
- ``GET /repos/{owner}/{repo}/installation``      the installation covering the repository
- ``GET /orgs/{org}/installation``, ``GET /users/{user}/installation``

The JWT is checked as GitHub does: RS256 with the App's public key, ``iss`` the App id, ``iat``
not in the future (60 s of clock skew allowed), ``exp`` in the future and at most 10 minutes
after ``iat``. Each failure answers 401 with GitHub's message. An installation token expires
after ``installation_token_seconds`` (GitHub: 1 hour) and then answers 401 Bad credentials.
``revoke_installation`` is a test switch: the installation's tokens answer 401 from then on and
new token requests 404, as after the App is uninstalled. Every token issued is kept in
``issued_tokens`` so a test can search for leaks.
"""

from __future__ import annotations

import re
import secrets
import string
import threading
import time
from dataclasses import dataclass, field

from .accounting import Accounting
from .config import AppConfig, EmulatorConfig, InstallationConfig, TokenConfig
from .data import Dataset
from .encoding import iso

DOCS = "https://docs.github.com/rest"
JWT_MAX_SECONDS = 600  # GitHub: a JWT may live at most 10 minutes
CLOCK_SKEW = 60
# GitHub's 401 messages for a JWT it refuses.
JWT_UNDECODABLE = "A JSON web token could not be decoded"
JWT_EXPIRED = (
    "'Expiration time' claim ('exp') must be a numeric value representing the future time at which "
    "the assertion expires"
)
JWT_TOO_LONG = "'Expiration time' claim ('exp') is too far in the future"
JWT_IAT = "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued"
JWT_ISS = "'Issuer' claim ('iss') must be an Integer"
INTEGRATION_FORBIDDEN = "Resource not accessible by integration"
PERMISSIONS = {"metadata": "read", "contents": "read"}

_ACCESS_TOKENS = re.compile(r"^/app/installations/(\d+)/access_tokens/?$")
_REPO_INSTALLATION = re.compile(r"^/repos/([^/]+)/([^/]+)/installation/?$")
_ACCOUNT_INSTALLATION = re.compile(r"^/(orgs|users)/([^/]+)/installation/?$")


def is_app_route(method: str, path: str) -> bool:
    return bool(
        (method == "POST" and _ACCESS_TOKENS.match(path))
        or (method == "GET" and path.rstrip("/") == "/app/installations")
        or (method == "GET" and (_REPO_INSTALLATION.match(path) or _ACCOUNT_INSTALLATION.match(path)))
    )


@dataclass
class _Installation:
    app: AppConfig
    config: InstallationConfig
    revoked: bool = False
    tokens: list[str] = field(default_factory=list)  # token names


class GitHubApps:
    def __init__(self, ds: Dataset, acc: Accounting, config: EmulatorConfig, clock=time.time) -> None:
        self.ds = ds
        self.acc = acc
        self.config = config
        self.clock = clock
        self.lock = threading.Lock()
        self.apps = {a.app_id: a for a in config.apps}
        self.installations: dict[int, _Installation] = {}
        for app in config.apps:
            for inst in app.installations:
                if inst.id in self.installations:
                    raise ValueError(f"installation id {inst.id} is used twice")
                self.installations[inst.id] = _Installation(app, inst)
        self.issued_tokens: list[str] = []  # every installation token handed out (for leak scans)
        self.jwt_refusals: list[str] = []  # the 401 messages given, oldest first
        self.token_requests = 0

    # ------------------------------------------------------------------ control
    def revoke_installation(self, installation_id: int) -> None:
        """The App is uninstalled: its tokens answer 401 and new ones are refused (404)."""
        with self.lock:
            inst = self.installations[int(installation_id)]
            inst.revoked = True
            names = list(inst.tokens)
        for name in names:
            self.acc.set_valid(name, False)

    def tokens_of(self, installation_id: int) -> list[str]:
        with self.lock:
            return list(self.installations[int(installation_id)].tokens)

    # ------------------------------------------------------------------ requests
    def handle(self, method: str, path: str, authorization: str | None, base: str) -> tuple[int, dict | list]:
        app, problem = self._authenticate(authorization)
        if app is None:
            with self.lock:
                self.jwt_refusals.append(problem)
            return 401, {"message": problem, "documentation_url": DOCS, "status": "401"}
        m = _ACCESS_TOKENS.match(path)
        if m and method == "POST":
            return self._buy(app, int(m.group(1)))
        if path.rstrip("/") == "/app/installations":
            with self.lock:
                found = [i for i in self.installations.values() if i.app is app and not i.revoked]
            return 200, [self._installation_json(i, base) for i in found]
        m = _REPO_INSTALLATION.match(path)
        if m:
            with self.ds.lock:
                repo, _ = self.ds.lookup(m.group(1), m.group(2))
                owner = self.ds.full_name(repo).split("/", 1)[0] if repo is not None else None
            inst = self._installation_on(app, owner) if owner else None
            doc = f"{DOCS}/apps/apps#get-a-repository-installation-for-the-authenticated-app"
        else:
            m = _ACCOUNT_INSTALLATION.match(path)
            assert m is not None
            inst = self._installation_on(app, m.group(2))
            kind = "organization" if m.group(1) == "orgs" else "user"
            doc = f"{DOCS}/apps/apps#get-{'an' if kind == 'organization' else 'a'}-{kind}-installation-for-the-authenticated-app"
        if inst is None:
            return 404, {"message": "Not Found", "documentation_url": doc, "status": "404"}
        return 200, self._installation_json(inst, base)

    def _installation_on(self, app: AppConfig, login: str) -> _Installation | None:
        with self.lock:
            for inst in self.installations.values():
                if inst.app is app and not inst.revoked and inst.config.account.lower() == login.lower():
                    return inst
        return None

    def _authenticate(self, authorization: str | None) -> tuple[AppConfig | None, str]:
        import jwt  # PyJWT; only the App routes need it

        scheme, _, value = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None, JWT_UNDECODABLE
        token = value.strip()
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None, JWT_UNDECODABLE
        iss = claims.get("iss")
        try:
            app_id = int(iss)
        except (TypeError, ValueError):
            return None, JWT_ISS
        app = self.apps.get(app_id)
        if app is None:
            return None, JWT_UNDECODABLE
        try:
            jwt.decode(
                token,
                app.public_key,
                algorithms=["RS256"],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.PyJWTError:
            return None, JWT_UNDECODABLE  # a wrong key or a tampered token
        now = self.clock()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int | float) or iat > now + CLOCK_SKEW:
            return None, JWT_IAT
        if not isinstance(exp, int | float) or exp <= now:
            return None, JWT_EXPIRED
        if exp - iat > JWT_MAX_SECONDS:
            return None, JWT_TOO_LONG
        return app, ""

    def _buy(self, app: AppConfig, installation_id: int) -> tuple[int, dict]:
        with self.lock:
            self.token_requests += 1
            inst = self.installations.get(installation_id)
            if inst is None or inst.app is not app or inst.revoked:
                return 404, {
                    "message": "Not Found",
                    "documentation_url": f"{DOCS}/apps/apps#create-an-installation-access-token-for-an-app",
                    "status": "404",
                }
            value = "ghs_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(36))
            expires = self.clock() + self.config.installation_token_seconds
            name = f"installation-{installation_id}-{len(inst.tokens) + 1}"
            cfg = inst.config
            tok = TokenConfig(
                name=name,
                token=value,
                core_limit=cfg.core_limit,
                graphql_limit=cfg.graphql_limit,
                # OAuth scopes do not apply to installation tokens; profiles' public email answers
                scopes=("read:user",),
                account=f"installation:{installation_id}",
                integration=True,
                expires_at=expires,
            )
            self.acc.add_token(tok)
            inst.tokens.append(name)
            self.issued_tokens.append(value)
        return 201, {
            "token": value,
            "expires_at": iso(int(expires)),
            "permissions": dict(PERMISSIONS),
            "repository_selection": "all",
        }

    def _installation_json(self, inst: _Installation, base: str) -> dict:
        login = inst.config.account
        uid = self.ds.user_id(login)
        kind = self.ds.user_type(uid) if uid else None
        return {
            "id": inst.config.id,
            "account": {"login": login, "id": uid, "type": kind or "User"},
            "app_id": inst.app.app_id,
            "app_slug": inst.app.slug,
            "target_id": uid,
            "target_type": kind or "User",
            "repository_selection": "all",
            "access_tokens_url": f"{base}/app/installations/{inst.config.id}/access_tokens",
            "permissions": dict(PERMISSIONS),
            "events": [],
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
            "suspended_at": None,
        }
