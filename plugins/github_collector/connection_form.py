"""The connection form of the ``github_repo_users`` connection type, as plain data.

One table feeds both ways Airflow builds the form: ``get_provider_info()``'s ``conn-fields``
and ``ui-field-behaviour`` (read by Airflow 3.2 and later without importing the hook), and
``GitHubHook.get_connection_form_widgets()`` / ``get_ui_field_behaviour()`` (read by older
Airflow). It imports nothing, so reading the provider's metadata stays cheap.

Each field key is the extra key ``hook.parse_settings`` reads. Number fields carry no
minimum or maximum in their schema: Airflow 3's number input would silently clamp a typed
value into the range, so the range is stated in the description and checked when the
connection is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CONN_TYPE = "github_repo_users"
HOOK_NAME = "GitHub (quota-aware)"
HOOK_CLASS = "github_collector.hook.GitHubHook"

Kind = Literal["string", "integer", "password"]


@dataclass(frozen=True)
class FormField:
    key: str
    kind: Kind
    label: str
    description: str
    placeholder: str = ""


FIELDS: tuple[FormField, ...] = (
    FormField(
        "tokens",
        "password",
        "More tokens",
        "Further GitHub tokens, comma-separated, beside the one in the token field. Each GitHub "
        "account is a separate budget, sent one request at a time; tokens of one account share it.",
        "token2,token3",
    ),
    FormField(
        "reserve",
        "integer",
        "Reserve per token",
        "Quota units left untouched on every token: an integer from 0 to 100000 (default 50).",
        "50",
    ),
    FormField(
        "timeout",
        "string",
        "Read timeout (s)",
        "Seconds to wait for GitHub's answer: a number from 1 to 600 (default 30).",
        "30",
    ),
    FormField(
        "max_inline_wait",
        "string",
        "Longest wait inside a task (s)",
        "Longer waits for quota defer the task: a number from 0 to 900 (default 30).",
        "30",
    ),
    FormField(
        "resume_lead",
        "string",
        "Resume before the reset (s)",
        "A deferral for quota ends this many seconds before GitHub's reset and the task sleeps "
        "the rest: a number from 0 to 60 (default 3).",
        "3",
    ),
    FormField(
        "rest_per_minute",
        "integer",
        "REST requests per token and minute",
        "An integer from 0 to 100000 (default 720, 80% of GitHub's secondary limit); 0 turns pacing off.",
        "720",
    ),
    FormField(
        "graphql_per_minute",
        "integer",
        "GraphQL requests per token and minute",
        "An integer from 0 to 100000 (default 1600, 80% of GitHub's secondary limit); 0 turns pacing off.",
        "1600",
    ),
    FormField(
        "pace_window",
        "string",
        "Pacing window (s)",
        "Seconds the per-minute rates are counted over: a number from 0.1 to 3600 (default 60).",
        "60",
    ),
    FormField(
        "secondary_default_wait",
        "string",
        "Wait after a secondary limit (s)",
        "Seconds a GitHub account rests after a secondary limit that gives no retry-after, doubled "
        "on repeats: a number from 1 to 3600 (default 60, as GitHub asks).",
        "60",
    ),
    FormField(
        "graphql_min_gap",
        "string",
        "Least pause between GraphQL queries (s)",
        "Seconds between the end of an account's GraphQL query and its next one, at least (the "
        "pause is also 0.18 x the last query's duration): a number from 0 to 60 (default 0).",
        "0",
    ),
    # GitHub App authentication (app_auth.py): alone, or beside the tokens above.
    FormField(
        "app_id",
        "string",
        "GitHub App ID",
        "The GitHub App's id (a number): with its private key, the App's installations join the "
        "token pool, each as its own quota. Leave empty to use tokens only.",
        "123456",
    ),
    FormField(
        "installation_id",
        "string",
        "GitHub App installation ID(s)",
        "Optional: one installation id, or several comma-separated. Empty: each repository "
        "owner's installation is found (GET /repos/{owner}/{repo}/installation).",
        "7654321",
    ),
    FormField(
        "private_key",
        "password",
        "GitHub App private key",
        "The App's private key, the whole PEM file (BEGIN and END lines included). App tokens "
        "cannot list stargazers or watchers: those lists need a token of a collaborator.",
    ),
)

APP_FIELDS = ("app_id", "installation_id", "private_key")

HIDDEN_FIELDS = ["schema", "port", "login"]
RELABELING = {"host": "GitHub REST API URL", "password": "GitHub token"}
PLACEHOLDERS = {
    "host": "https://api.github.com (GitHub Enterprise: https://HOST/api/v3)",
    "password": "a personal access token",
} | {f.key: f.placeholder for f in FIELDS if f.placeholder}

_SCHEMA_TYPE = {"string": "string", "integer": "integer", "password": "string"}


def conn_fields() -> dict[str, dict]:
    """``conn-fields`` of the provider info: a JSON-schema per extra key."""
    out: dict[str, dict] = {}
    for f in FIELDS:
        schema: dict = {"type": [_SCHEMA_TYPE[f.kind], "null"]}
        if f.kind == "password":
            schema["format"] = "password"
        out[f.key] = {"label": f.label, "description": f.description, "schema": schema}
    return out


def ui_field_behaviour() -> dict[str, dict]:
    """``ui-field-behaviour`` of the provider info (kebab-case keys)."""
    return {
        "hidden-fields": list(HIDDEN_FIELDS),
        "relabeling": dict(RELABELING),
        "placeholders": dict(PLACEHOLDERS),
    }
