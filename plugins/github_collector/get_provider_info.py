"""Provider metadata, read by Airflow's ProvidersManager through the package's
``apache_airflow_provider`` entry point. Only plain data is imported here: Airflow calls this
in every process that lists providers, before any hook is needed."""

from __future__ import annotations

from github_collector import __version__, connection_form

INTEGRATION = "GitHub repository users"


def get_provider_info() -> dict:
    return {
        "package-name": "github-repo-users",
        "name": "GitHub repository users",
        "description": "Collects the users tied to GitHub repositories (contributors, fork owners, "
        "stargazers, watchers) with their profiles into Postgres, within GitHub's API quota.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://docs.github.com/en/rest",
                "tags": ["software"],
            }
        ],
        "hooks": [{"integration-name": INTEGRATION, "python-modules": ["github_collector.hook"]}],
        "operators": [{"integration-name": INTEGRATION, "python-modules": ["github_collector.operators"]}],
        "sensors": [{"integration-name": INTEGRATION, "python-modules": ["github_collector.sensors"]}],
        "connection-types": [
            {
                "hook-class-name": connection_form.HOOK_CLASS,
                "hook-name": connection_form.HOOK_NAME,
                "connection-type": connection_form.CONN_TYPE,
                "conn-fields": connection_form.conn_fields(),
                "ui-field-behaviour": connection_form.ui_field_behaviour(),
            }
        ],
    }
