"""Emulator settings: tokens, quota windows, secondary limits and injected faults."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

PRIMARY_STATUSES = (403, 429)


@dataclass
class TokenConfig:
    name: str  # what logs and stats show; the token value itself is never reported
    token: str
    core_limit: int = 5000
    graphql_limit: int = 5000
    search_limit: int = 30
    scopes: tuple[str, ...] = ("repo", "read:user")
    # "*" = collaborator everywhere (stargazers/watchers visible); otherwise "owner/name" entries
    collaborator_repos: tuple[str, ...] = ()
    valid: bool = True  # False answers 401, as for a revoked token

    def __post_init__(self) -> None:
        self.scopes = tuple(self.scopes)
        self.collaborator_repos = tuple(self.collaborator_repos)


@dataclass
class EmulatorConfig:
    tokens: list[TokenConfig] = field(default_factory=list)
    window_seconds: float = 3600.0  # primary quota window; tests shrink it to seconds
    unauthenticated_core_limit: int = 60
    primary_limit_status: int = 403  # GitHub answers primary exhaustion with 403 or 429
    secondary_status: int = 403
    secondary_max_concurrent: int = 100  # requests in flight per token
    secondary_rest_points_per_minute: int = 900  # per token and REST endpoint family
    secondary_graphql_points_per_minute: int = 2000
    secondary_window_seconds: float = 60.0  # the "minute" of the points limits
    secondary_retry_after: int | None = None  # fixed retry-after; None = time until points free up
    fault_502_rate: float = 0.0  # probability of an injected 502 (seeded, no quota cost)
    fault_seed: int = 0
    latency_ms: float = 0.0  # added to every API request
    graphql_timeout_nodes: int | None = None  # queries above this node count 502 and still cost
    log_limit: int = 200_000  # request log entries kept (oldest dropped)

    def __post_init__(self) -> None:
        names = [t.name for t in self.tokens]
        if len(set(names)) != len(names):
            raise ValueError("token names must be unique")
        values = [t.token for t in self.tokens]
        if len(set(values)) != len(values):
            raise ValueError("token values must be unique")
        if self.primary_limit_status not in PRIMARY_STATUSES:
            raise ValueError("primary_limit_status must be 403 or 429")


# Settings that set_faults() / POST /_emulator/faults may change at runtime.
FAULT_FIELDS = frozenset(
    f.name for f in fields(EmulatorConfig) if f.name not in ("tokens", "window_seconds", "log_limit")
)

_KEY_SPLIT = re.compile(r":(?=(?:collab|core|graphql|search|scopes|valid)=)")
_TOKEN_START = re.compile(r",(?=\s*[A-Za-z0-9_.\-]+=)")

TOKEN_SYNTAX = """\
token syntax: NAME=VALUE[:collab=*|owner/a,owner/b][:core=5000][:graphql=5000][:search=30]
              [:scopes=repo+read:user][:valid=false]
  collab   repos where the token is a collaborator (sees stargazers/watchers); default none
  scopes   OAuth scopes joined with '+'; default repo+read:user ('email' needs user:email or read:user)
EMULATOR_TOKENS holds several specs separated by ';' or newlines (or ',' before the next NAME=)."""  # noqa: S105


def parse_token_spec(text: str) -> TokenConfig:
    head, *options = _KEY_SPLIT.split(text.strip())
    name, sep, value = head.partition("=")
    if not sep or not name or not value:
        raise ValueError("token spec must start with NAME=VALUE")
    tok = TokenConfig(name=name.strip(), token=value.strip())
    for opt in options:
        key, _, val = opt.partition("=")
        if key == "collab":
            tok.collaborator_repos = tuple(v.strip() for v in val.split(",") if v.strip())
        elif key in ("core", "graphql", "search"):
            setattr(tok, f"{key}_limit", int(val))
        elif key == "scopes":
            tok.scopes = tuple(s for s in val.split("+") if s)
        elif key == "valid":
            tok.valid = val.lower() not in ("0", "false", "no")
    return tok


def parse_token_list(text: str) -> list[TokenConfig]:
    specs: list[str] = []
    for chunk in re.split(r"[;\n]", text):
        specs.extend(s for s in _TOKEN_START.split(chunk) if s.strip())
    return [parse_token_spec(s) for s in specs]
