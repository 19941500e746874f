"""Typed failures raised by the GitHub client.

None of these messages ever carries a token: tokens are referred to by fingerprint.
"""

from __future__ import annotations

import datetime as dt


class GitHubError(Exception):
    """Base class for every failure the client reports."""


class QuotaExhausted(GitHubError):
    """Every token is out of quota (primary or secondary) above its reserve.

    ``reset_at`` is the epoch second at which the earliest token becomes usable again,
    so a caller can defer exactly until then instead of sleeping in a worker slot.
    """

    def __init__(self, resource: str, reset_at: float, detail: str = "") -> None:
        self.resource = resource
        self.reset_at = float(reset_at)
        self.spacing = False  # only the GraphQL spacing pause holds back: seconds, not a limit
        when = dt.datetime.fromtimestamp(self.reset_at, tz=dt.UTC).isoformat(timespec="seconds")
        msg = f"GitHub {resource} quota exhausted on every token; earliest reset at {when}"
        super().__init__(f"{msg} ({detail})" if detail else msg)

    def __reduce__(self):  # keep it picklable across process boundaries
        return (type(self), (self.resource, self.reset_at))


class TokenRejected(GitHubError):
    """GitHub answered 401 for a token: revoked, expired or mistyped."""

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint
        super().__init__(
            f"GitHub rejected token {fingerprint} (401 Bad credentials); "
            "it is taken out of the pool: replace it in the github connection"
        )


class NoUsableToken(GitHubError):
    """Every configured token was rejected."""


class InstallationUnavailable(GitHubError):
    """GitHub sells no token for a GitHub App installation (403/404: uninstalled, suspended, or
    not this App's). Its repositories go on with the other tokens of the pool, if any."""

    def __init__(self, installation_id: int, name: str, detail: str) -> None:
        self.installation_id = installation_id
        self.name = name
        self.detail = detail
        super().__init__(
            f"GitHub App installation {installation_id} is unavailable ({detail}): "
            "the App was uninstalled or suspended there; reinstall it or remove the installation id"
        )

    def __reduce__(self):  # keep it picklable across process boundaries
        return (type(self), (self.installation_id, self.name, self.detail))


class GitHubUnavailable(GitHubError):
    """Retries of a 5xx, a timeout or an unreadable body ran out."""


class TooManyRedirects(GitHubUnavailable):
    """A REST GET kept redirecting (a chain longer than GitHub makes, or a loop)."""


class GraphQLTimeout(GitHubError):
    """GitHub gave up on a GraphQL query (502/504, or a 200 whose only content is an error
    saying something went wrong): ask for smaller pages."""


class GraphQLError(GitHubError):
    """A GraphQL response carried errors that are not per-path data outcomes."""

    def __init__(self, errors: list[dict]) -> None:
        self.errors = errors
        kinds = sorted({str(e.get("type") or "ERROR") for e in errors})
        first = str(errors[0].get("message", ""))[:300] if errors else ""
        super().__init__(f"GraphQL errors {kinds}: {first}")


class ConfigError(GitHubError, ValueError):
    """Bad connection settings, reported before any request is sent."""


class ForeignHost(GitHubError):
    """GitHub pointed (a redirect or a ``link`` header) at another origin than the configured
    API: the token is never sent there, so the request is refused."""

    def __init__(self, url_origin: str, api_origin: str) -> None:
        self.host = url_origin
        self.api_origin = api_origin
        super().__init__(
            f"refused to follow GitHub to {url_origin}: only {api_origin} (the connection's base URL) "
            "ever gets the token"
        )

    def __reduce__(self):
        return (type(self), (self.host, self.api_origin))


class GraphQLQueryError(GitHubError):
    """GitHub refused the query itself (validation: an unknown field or argument, more than 100
    ids...). Asking again cannot help: the query must change."""

    def __init__(self, message: str) -> None:
        self.github_message = message
        super().__init__(f"GitHub refused the GraphQL query: {message}")

    def __reduce__(self):
        return (type(self), (self.github_message,))
