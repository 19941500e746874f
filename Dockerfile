# Images for docker-compose.yaml, built from the official Airflow image.
#
#   airflow   (the default, last stage): the pinned providers and the github-repo-users
#             provider package built from this repository. dags/ is mounted by
#             docker-compose.yaml, so a DAG edit needs no rebuild; a change under plugins/ or
#             to the requirements needs `docker compose build`.
#   emulator: the GitHub API emulator for the demo profile; never part of the airflow image.
#
# The base tag's Airflow version must equal the apache-airflow pin in requirements.txt
# (tests/test_compose.py checks this).
FROM apache/airflow:3.3.2-python3.11 AS base

# The official image expects extra packages to be installed as the airflow user, not root.
USER airflow

COPY --chown=airflow:root requirements.txt constraints-3.3.txt /opt/github-repo-users/

# Naming apache-airflow==${AIRFLOW_VERSION} as well stops pip from silently replacing the
# image's Airflow if requirements.txt ever drifts from the base tag; the lock keeps the
# providers' dependencies at the tested versions.
RUN pip install --no-cache-dir \
        "apache-airflow==${AIRFLOW_VERSION}" \
        -r /opt/github-repo-users/requirements.txt \
        -c /opt/github-repo-users/constraints-3.3.txt

FROM base AS emulator

COPY --chown=airflow:root emulator/ /opt/github-emulator/
RUN pip install --no-cache-dir /opt/github-emulator -c /opt/github-repo-users/constraints-3.3.txt

FROM base AS airflow

# The provider package: what `pip install .` builds from pyproject.toml and plugins/.
COPY --chown=airflow:root pyproject.toml /opt/github-repo-users/
COPY --chown=airflow:root plugins/github_collector/ /opt/github-repo-users/plugins/github_collector/
RUN pip install --no-cache-dir \
        "apache-airflow==${AIRFLOW_VERSION}" \
        /opt/github-repo-users \
        -c /opt/github-repo-users/constraints-3.3.txt
