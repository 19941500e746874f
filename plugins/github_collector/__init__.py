"""github-repo-users: an Airflow provider (hook, operators, sensor) and the logic of the
github_repo_users DAG. Importing the package imports nothing else, so Airflow can read the
provider's metadata cheaply."""

from __future__ import annotations

__version__ = "0.2.0"
