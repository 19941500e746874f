# Airflow image for the github_repo_users DAG: the official image plus the pinned providers.
# DAGs, plugins and include/ are mounted by docker-compose.yaml, so code edits need no rebuild.
# The base tag's Airflow version must equal the apache-airflow pin in requirements.txt
# (tests/test_compose.py checks this).
FROM apache/airflow:3.3.2-python3.11

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
