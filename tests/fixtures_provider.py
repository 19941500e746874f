"""The product as users install it: a wheel built from this checkout, installed into a
virtualenv of its own that sees the project's Airflow (import with
``from fixtures_provider import *``).

Nothing here puts ``plugins/`` on ``sys.path``: code run with ``provider_python`` imports
``github_collector`` from the installed wheel, and Airflow finds the provider through the
wheel's entry point.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
__all__ = ["ROOT", "provider_env", "provider_python", "provider_wheel", "wheel_members"]

# Local state of a checkout that a fresh clone does not have; a stale build/ or egg-info
# could otherwise leak removed files into the wheel.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv*",
    ".lockvenv",
    ".airflow",
    "__pycache__",
    "*.pyc",
    "*.egg-info",
    "build",
    "dist",
    ".pytest_cache",
    ".ruff_cache",
    "output",
    "logs",
)


def build_wheel(out: Path) -> Path:
    """``pip wheel . --no-deps`` of a clean copy of this checkout; the path of the wheel."""
    src = out / "src"
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCE)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-w", str(out / "dist"), "-q"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheels = sorted((out / "dist").glob("github_repo_users-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def wheel_members(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def make_venv(wheel: Path, dest: Path) -> Path:
    """A virtualenv holding only the wheel, over the packages of the interpreter running pytest.

    ``venv --system-site-packages`` would expose the base interpreter's packages, not this
    virtualenv's (where Airflow is), so a .pth file adds this virtualenv's site-packages,
    after the new one's own: the wheel's github_collector comes first.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True, timeout=120)
    python = dest / "bin" / "python"
    own = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(own, "_project_venv.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return python


def provider_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for Airflow commands run with ``provider_python``: nothing of the checkout
    on the path but the DAGs folder, an empty plugins folder, SQLite metadata in ``home``."""
    plugins = home / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and k != "PYTHONPATH"}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(plugins),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(home / "logs"),
    )
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def provider_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def provider_python(provider_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a virtualenv where the built wheel is installed."""
    return make_venv(provider_wheel, tmp_path_factory.mktemp("provider-venv") / "venv")
