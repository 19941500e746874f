"""Static checks of docker-compose.yaml and the Dockerfile (no Docker engine needed).

Each check is a function that returns the problems it finds, so the same code is run on the
real files and, in the ``*_catches_*`` tests, on broken copies to show that it can fail.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
REQUIREMENTS = ROOT / "requirements.txt"

AIRFLOW_DAEMONS = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)
AIRFLOW_STORES = ("postgres", "redis")  # metadata database and Celery broker
PRODUCT_STORES = ("product-postgres", "product-redis")
AIRFLOW_SERVICES = (*AIRFLOW_DAEMONS, "airflow-init")
TOKEN_RE = re.compile(r"(ghp_|github_pat_|gho_)[A-Za-z0-9_]{20,}")
# ${VAR:-default} / ${VAR-default} / ${VAR}; the file keeps braces out of its defaults.
INTERPOLATION_RE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")

Compose = dict[str, Any]


@pytest.fixture(scope="module")
def compose() -> Compose:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services(doc: Compose) -> dict[str, dict[str, Any]]:
    return doc.get("services") or {}


def with_defaults(value: str) -> str:
    """What Compose would substitute with no variables set (escaped $$ becomes $)."""
    return INTERPOLATION_RE.sub(lambda m: m.group(2) or "", value).replace("$$", "$")


def env_of(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...] form
        env = dict(item.split("=", 1) for item in env)
    return {k: with_defaults(str(v)) for k, v in env.items()}


def depends_on_names(svc: dict[str, Any]) -> set[str]:
    deps = svc.get("depends_on") or []
    return set(deps) if isinstance(deps, list) else set(deps.keys())


def host_of(url: str) -> str:
    return re.sub(r"^[\w+]+://", "", url).split("@")[-1].split("/")[0].split(":")[0]


def command_words(svc: dict[str, Any]) -> list[str]:
    cmd = svc.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(w) for w in cmd]


def split_volume(spec: str | dict[str, Any]) -> tuple[str, str]:
    """(source, target) of a short- or long-syntax volume, with defaults substituted."""
    if isinstance(spec, dict):
        return with_defaults(str(spec.get("source", ""))), str(spec["target"])
    parts = with_defaults(spec).split(":")
    return parts[0], parts[1] if len(parts) > 1 else parts[0]


def is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


# --- checks: each returns a list of problems -----------------------------------------------


def missing_dependencies(doc: Compose) -> list[str]:
    svcs = services(doc)
    return [
        f"{name} depends on undefined service {dep!r}"
        for name, svc in svcs.items()
        for dep in sorted(depends_on_names(svc))
        if dep not in svcs
    ]


def missing_bind_sources(doc: Compose, root: Path = ROOT) -> list[str]:
    problems = []
    for name, svc in services(doc).items():
        for spec in svc.get("volumes") or []:
            source, _ = split_volume(spec)
            if is_bind(source) and not (root / source).exists():
                problems.append(f"{name}: bind-mount source {source!r} does not exist")
    return problems


def undeclared_volumes(doc: Compose) -> list[str]:
    declared = set(doc.get("volumes") or {})
    problems = []
    for name, svc in services(doc).items():
        for spec in svc.get("volumes") or []:
            source, _ = split_volume(spec)
            if source and not is_bind(source) and source not in declared:
                problems.append(f"{name}: named volume {source!r} is not declared")
    return problems


def healthcheck_command(test: str | list[str] | None) -> list[str]:
    """The probe itself: a ["CMD"/"CMD-SHELL", ...] list or a shell string; [] for NONE."""
    if isinstance(test, str):
        return [test] if test.strip() else []
    words = [str(w) for w in test or []]
    if not words or words[0] == "NONE":
        return []
    return [w for w in words[1:] if w.strip()] if words[0] in ("CMD", "CMD-SHELL") else words


def missing_healthchecks(doc: Compose) -> list[str]:
    svcs = services(doc)
    # Every named daemon and store, plus anything else that restarts (is long-running).
    wanted = {*AIRFLOW_DAEMONS, *AIRFLOW_STORES, *PRODUCT_STORES}
    wanted |= {n for n, s in svcs.items() if s.get("restart") in ("always", "unless-stopped")}
    problems = []
    for name in sorted(wanted):
        check = (svcs.get(name) or {}).get("healthcheck") or {}
        test = check.get("test")
        if name not in svcs:
            problems.append(f"service {name!r} is missing")
        elif check.get("disable") or not healthcheck_command(test):
            problems.append(f"{name} has no healthcheck")
    return problems


def store_separation_problems(doc: Compose) -> list[str]:
    svcs = services(doc)
    problems = [f"service {n!r} is missing" for n in (*AIRFLOW_STORES, *PRODUCT_STORES) if n not in svcs]
    if problems:
        return problems
    for name in AIRFLOW_SERVICES:
        env = env_of(svcs[name])
        redis_conn = json.loads(env.get("AIRFLOW_CONN_REDIS_DEFAULT", "{}"))
        pg_conn = json.loads(env.get("AIRFLOW_CONN_POSTGRES_DEFAULT", "{}"))
        broker = host_of(env.get("AIRFLOW__CELERY__BROKER_URL", ""))
        metadata = host_of(env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", ""))
        if broker != "redis" or metadata != "postgres":
            problems.append(f"{name}: Airflow broker/metadata DB are {broker!r}/{metadata!r}")
        if redis_conn.get("host") != "product-redis":
            problems.append(f"{name}: redis_default points at {redis_conn.get('host')!r}")
        if pg_conn.get("host") != "product-postgres" or pg_conn.get("schema") != "github_repo_users":
            problems.append(f"{name}: postgres_default is {pg_conn.get('host')!r}/{pg_conn.get('schema')!r}")
    product_db = env_of(svcs["product-postgres"]).get("POSTGRES_DB")
    if product_db != "github_repo_users":
        problems.append(f"product-postgres creates database {product_db!r}")
    words = command_words(svcs["product-redis"])
    if not any(a == "--appendonly" and b == "yes" for a, b in itertools.pairwise(words)):
        problems.append("product-redis does not run with --appendonly yes")
    airflow_volumes = {split_volume(v)[0] for n in AIRFLOW_STORES for v in svcs[n].get("volumes") or []}
    for product in PRODUCT_STORES:
        vols = {split_volume(v)[0] for v in svcs[product].get("volumes") or []}
        if not vols or any(is_bind(v) for v in vols):
            problems.append(f"{product} keeps its data in no named volume")
        if vols & airflow_volumes:
            problems.append(f"{product} shares a volume with Airflow's stores")
    return problems


def emulator_problems(doc: Compose) -> list[str]:
    svcs = services(doc)
    emulator = svcs.get("emulator")
    if emulator is None:
        return ["service 'emulator' is missing"]
    problems = []
    if "emulator" not in (emulator.get("profiles") or []):
        problems.append("emulator is not behind the 'emulator' profile")
    # A service without profiles that depends on a profiled one would not start without it.
    for name, svc in svcs.items():
        if "emulator" in depends_on_names(svc) and not svc.get("profiles"):
            problems.append(f"{name} depends on the optional emulator")
    words = command_words(emulator)
    if words[:3] != ["python", "-m", "github_emulator"] or "8765" not in words:
        problems.append(f"emulator command is {words}")
    if "EMULATOR_TOKENS" not in (emulator.get("environment") or {}):
        problems.append("emulator takes no EMULATOR_TOKENS")
    return problems


def token_like_values(text: str) -> list[str]:
    return [m.group(0) for m in TOKEN_RE.finditer(text)]


def dockerfile_stages(dockerfile: str) -> dict[str, str]:
    """Each stage's instructions (comments left out), including those of the stages it is built
    FROM, by name; the last stage (what a build without a target makes) is also under ""."""
    stages: dict[str, str] = {}
    name, text = None, ""
    for line in dockerfile.splitlines(keepends=True):
        if line.lstrip().startswith("#"):
            continue
        m = re.match(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            if name is not None:
                stages[name] = text
            parent, name = m.group(1), m.group(2) or f"stage{len(stages)}"
            text = stages.get(parent, "") + line
        elif name is not None:
            text += line
    if name is not None:
        stages[name] = stages[""] = text
    return stages


def build_target(svc: dict[str, Any]) -> str:
    build = svc.get("build")
    return (build or {}).get("target", "") if isinstance(build, dict) else ""


def pip_installs(stage: str) -> list[str]:
    """The pip install commands of a stage, continuation lines joined."""
    return [m.group(0) for m in re.finditer(r"^RUN\s+pip install\b(?:.*\\\n)*.*$", stage, re.M)]


def image_problems(doc: Compose, dockerfile: str) -> list[str]:
    svcs = services(doc)
    stages = dockerfile_stages(dockerfile)
    problems = []
    for name in (*AIRFLOW_SERVICES, "emulator"):
        build = (svcs.get(name) or {}).get("build")
        context, file = (
            (build, "Dockerfile")
            if isinstance(build, str)
            else ((build or {}).get("context"), (build or {}).get("dockerfile", "Dockerfile"))
        )
        if context is None or (ROOT / context / file).resolve() != DOCKERFILE:
            problems.append(f"{name} is not built from {DOCKERFILE.name} (build: {build!r})")
        elif build_target(svcs[name]) not in stages:
            problems.append(f"{name} builds target {build_target(svcs[name])!r}, which the Dockerfile lacks")
    images = {n: (svcs.get(n) or {}).get("image") for n in ("airflow-worker", "emulator")}
    if images["airflow-worker"] == images["emulator"]:
        problems.append(f"the Airflow and emulator images share the tag {images['emulator']!r}")
    airflow = stages.get(build_target(svcs.get("airflow-worker") or {}), "")
    emulator = stages.get(build_target(svcs.get("emulator") or {}), "")
    if not re.search(r"^COPY\b.*\brequirements\.txt\b", airflow, re.M):
        problems.append("the Airflow image does not copy requirements.txt")
    runs = pip_installs(airflow)
    requirements = [r for r in runs if re.search(r"-r\s+\S*requirements\.txt", r)]
    if not requirements:
        problems.append("the Airflow image does not pip install -r requirements.txt")
    elif not re.search(r"-c\s+\S*constraints-3\.3\.txt", requirements[0]):
        problems.append("the Airflow image does not install with -c constraints-3.3.txt")
    # the provider package, from the project directory holding pyproject.toml and the package
    copies = re.findall(r"^COPY\b.*?(\S+)\s*$", airflow, re.M)
    project = next(
        (m.group(1) for m in re.finditer(r"^COPY\b.*\bpyproject\.toml\s+(\S+?)/?\s*$", airflow, re.M)), None
    )
    if project is None or not any(re.search(rf"\s{re.escape(project)}/?(\s|$)", r) for r in runs):
        problems.append("the Airflow image does not pip install the project (pyproject.toml)")
    if not any(c.rstrip("/").endswith("plugins/github_collector") for c in copies):
        problems.append("the Airflow image does not copy plugins/github_collector")
    if "emulator" in airflow.lower() or "graphql" in airflow.lower():
        problems.append("the Airflow image holds the emulator")
    if not any("emulator" in r for r in pip_installs(emulator)):
        problems.append("the emulator image does not install the emulator")
    return problems


def code_mount_problems(doc: Compose) -> list[str]:
    """The code comes from the image: plugins/ is not mounted; the DAG file is (edits need no rebuild)."""
    problems = []
    for name in AIRFLOW_SERVICES:
        mounts = {split_volume(v) for v in services(doc)[name].get("volumes") or []}
        for source, target in mounts:
            if source.rstrip("/") in ("./plugins", "plugins") or target.rstrip("/") == "/opt/airflow/plugins":
                problems.append(f"{name} mounts {source} at {target}: the code must come from the image")
            if source.rstrip("/").endswith("emulator"):
                problems.append(f"{name} mounts the emulator")
        if ("./dags", "/opt/airflow/dags") not in mounts:
            problems.append(f"{name} does not mount ./dags at /opt/airflow/dags")
    return problems


def base_version_problems(dockerfile: str, requirements: str) -> list[str]:
    base = re.search(r"^FROM\s+apache/airflow:(\d+\.\d+\.\d+)\S*", dockerfile, re.M)
    pin = re.search(r"^apache-airflow==(\S+)\s*$", requirements, re.M)
    if not base or not pin:
        return [f"cannot read the base image ({base}) or the apache-airflow pin ({pin})"]
    if base.group(1) != pin.group(1):
        return [f"base image has Airflow {base.group(1)}, requirements.txt pins {pin.group(1)}"]
    return []


# --- the real files --------------------------------------------------------------------------


def test_compose_parses_with_all_services(compose: Compose) -> None:
    expected = {*AIRFLOW_SERVICES, *AIRFLOW_STORES, *PRODUCT_STORES, "emulator"}
    assert expected <= set(services(compose))
    assert "x-airflow-common" in compose


def test_every_depends_on_target_exists(compose: Compose) -> None:
    assert missing_dependencies(compose) == []
    # The merged anchor reached every Airflow service.
    for name in AIRFLOW_SERVICES:
        assert {"postgres", "redis"} <= depends_on_names(services(compose)[name]), name


def test_bind_mount_sources_exist(compose: Compose) -> None:
    assert missing_bind_sources(compose) == []


def test_named_volumes_are_declared(compose: Compose) -> None:
    assert undeclared_volumes(compose) == []


def test_airflow_services_and_stores_have_healthchecks(compose: Compose) -> None:
    assert missing_healthchecks(compose) == []


def test_product_stores_are_separate_and_redis_is_durable(compose: Compose) -> None:
    assert store_separation_problems(compose) == []


def test_emulator_is_optional(compose: Compose) -> None:
    assert emulator_problems(compose) == []


def test_no_real_looking_github_token() -> None:
    for path in (COMPOSE_FILE, DOCKERFILE):
        assert token_like_values(path.read_text()) == [], path.name


def test_image_is_built_from_dockerfile_with_requirements_and_the_package(compose: Compose) -> None:
    assert image_problems(compose, DOCKERFILE.read_text()) == []


def test_code_comes_from_the_image_and_dags_are_mounted(compose: Compose) -> None:
    assert code_mount_problems(compose) == []


def test_base_image_matches_airflow_pin() -> None:
    assert base_version_problems(DOCKERFILE.read_text(), REQUIREMENTS.read_text()) == []


def test_github_connection_defaults_to_the_emulator(compose: Compose) -> None:
    """With no GITHUB_CONN set, github_default reaches the emulator with a token it accepts."""
    from airflow.models.connection import Connection

    from github_collector.hook import parse_settings

    svcs = services(compose)
    raw = svcs["airflow-worker"]["environment"]["AIRFLOW_CONN_GITHUB_DEFAULT"]
    assert raw.startswith("${GITHUB_CONN:-"), raw
    value = with_defaults(raw)
    conn = (
        Connection.from_json(value, conn_id="github_default")
        if value.startswith("{")
        else Connection(conn_id="github_default", uri=value)
    )
    settings = parse_settings(conn.host, conn.password, conn.extra, conn.schema, conn.port)
    words = command_words(svcs["emulator"])
    assert settings["base_url"] == f"http://emulator:{words[words.index('--port') + 1]}"
    specs = env_of(svcs["emulator"])["EMULATOR_TOKENS"].split(";")
    accepted = {spec.split("=", 1)[1].split(":", 1)[0] for spec in specs}
    assert settings["tokens"] and set(settings["tokens"]) <= accepted


def test_default_repositories_are_the_packaged_list(compose: Compose) -> None:
    """GITHUB_REPO_USERS_REPOS_FILE is empty unless set, so the image's packaged list is used;
    a file named there must lie under a mounted folder."""
    for name in AIRFLOW_SERVICES:
        env = services(compose)[name]["environment"]
        assert env["GITHUB_REPO_USERS_REPOS_FILE"].startswith("${GITHUB_REPO_USERS_REPOS_FILE:-"), name
        assert env_of(services(compose)[name])["GITHUB_REPO_USERS_REPOS_FILE"] == "", name
        targets = [split_volume(v)[1] for v in services(compose)[name].get("volumes") or []]
        assert "/opt/airflow/include" in targets, name


def test_workers_can_scale(compose: Compose) -> None:
    worker = services(compose)["airflow-worker"]
    assert "container_name" not in worker and not worker.get("ports")
    assert env_of(worker)["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


# --- the checks fail on broken copies ----------------------------------------------------------


def _broken(compose: Compose, edit: Callable[[Compose], object]) -> Compose:
    doc = copy.deepcopy(compose)
    edit(doc)
    return doc


def test_checks_catch_removed_dependency(compose: Compose) -> None:
    # redis is referenced only through the x-airflow-common merge.
    assert missing_dependencies(_broken(compose, lambda d: d["services"].pop("redis")))
    assert missing_dependencies(_broken(compose, lambda d: d["services"].pop("product-redis")))
    assert missing_dependencies(_broken(compose, lambda d: d["services"].pop("airflow-init")))


def test_checks_catch_list_form_dependency(compose: Compose) -> None:
    def edit(doc: Compose) -> None:
        doc["services"]["airflow-scheduler"]["depends_on"] = ["postgres", "no-such-service"]

    assert missing_dependencies(_broken(compose, edit)) == [
        "airflow-scheduler depends on undefined service 'no-such-service'"
    ]


def test_checks_catch_missing_bind_source(compose: Compose, tmp_path: Path) -> None:
    for sub in ("dags", "config", "logs"):
        (tmp_path / sub).mkdir()
    problems = missing_bind_sources(compose, root=tmp_path)
    assert problems and all("./include" in p for p in problems)


def test_checks_catch_undeclared_volume(compose: Compose) -> None:
    assert undeclared_volumes(_broken(compose, lambda d: d["volumes"].pop("product-redis-volume")))


def test_checks_catch_missing_healthcheck(compose: Compose) -> None:
    for name in (*AIRFLOW_DAEMONS, *PRODUCT_STORES):
        assert missing_healthchecks(_broken(compose, lambda d, n=name: d["services"][n].pop("healthcheck")))


def test_checks_catch_shared_or_volatile_stores(compose: Compose) -> None:
    def share_redis(doc: Compose) -> None:
        for svc in doc["services"].values():
            env = svc.get("environment") or {}
            if "AIRFLOW_CONN_REDIS_DEFAULT" in env:
                env["AIRFLOW_CONN_REDIS_DEFAULT"] = '{"conn_type": "redis", "host": "redis"}'

    def no_aof(doc: Compose) -> None:
        doc["services"]["product-redis"]["command"] = ["redis-server"]

    assert store_separation_problems(_broken(compose, share_redis))
    assert store_separation_problems(_broken(compose, no_aof))


def test_checks_catch_unprofiled_emulator(compose: Compose) -> None:
    assert emulator_problems(_broken(compose, lambda d: d["services"]["emulator"].pop("profiles")))


def test_checks_catch_token_and_version_drift() -> None:
    assert token_like_values("GITHUB_CONN: ${GITHUB_CONN:-ghp_" + "a1B2" * 9 + "}")
    assert base_version_problems("FROM apache/airflow:3.3.1-python3.11\n", "apache-airflow==3.3.2\n")


def test_checks_catch_image_not_built_from_dockerfile(compose: Compose) -> None:
    def prebuilt(doc: Compose) -> None:
        doc["services"]["airflow-worker"].pop("build")

    def wrong_target(doc: Compose) -> None:
        doc["services"]["emulator"]["build"]["target"] = "airflow"

    def one_tag(doc: Compose) -> None:
        doc["services"]["emulator"]["image"] = doc["services"]["airflow-worker"]["image"]

    dockerfile = DOCKERFILE.read_text()
    assert image_problems(_broken(compose, prebuilt), dockerfile)
    assert image_problems(_broken(compose, wrong_target), dockerfile)
    assert image_problems(_broken(compose, one_tag), dockerfile)
    assert image_problems(compose, "FROM apache/airflow:3.3.2-python3.11\nRUN pip install requests\n")


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        # the provider package no longer installed
        (lambda d: re.sub(r"\n\s*/opt/github-repo-users \\\n", "\n", d), "does not pip install the project"),
        # the emulator installed into the Airflow image
        (lambda d: d + "COPY emulator/ /opt/github-emulator/\n", "holds the emulator"),
        # graphql-core back among the Airflow image's packages
        (lambda d: d + "RUN pip install graphql-core\n", "holds the emulator"),
        # the emulator stage no longer installs it
        (
            lambda d: d.replace("RUN pip install --no-cache-dir /opt/github-emulator", "RUN true"),
            "emulator image does not install",
        ),
    ],
)
def test_checks_catch_a_dockerfile_without_the_package_or_with_the_emulator(compose, edit, said) -> None:
    broken = edit(DOCKERFILE.read_text())
    assert broken != DOCKERFILE.read_text()
    assert any(said in p for p in image_problems(compose, broken)), image_problems(compose, broken)


def test_checks_catch_mounted_code(compose: Compose) -> None:
    def mount_plugins(doc: Compose) -> None:  # a new list: the services share the anchor's
        worker = doc["services"]["airflow-worker"]
        worker["volumes"] = [*worker["volumes"], "./plugins:/opt/airflow/plugins"]

    def no_dags(doc: Compose) -> None:
        vols = doc["services"]["airflow-scheduler"]["volumes"]
        doc["services"]["airflow-scheduler"]["volumes"] = [v for v in vols if not v.startswith("./dags")]

    assert code_mount_problems(_broken(compose, mount_plugins)) == [
        "airflow-worker mounts ./plugins at /opt/airflow/plugins: the code must come from the image"
    ]
    assert code_mount_problems(_broken(compose, no_dags)) == [
        "airflow-scheduler does not mount ./dags at /opt/airflow/dags"
    ]
