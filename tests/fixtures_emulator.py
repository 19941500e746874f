"""Pytest fixtures around the GitHub emulator (import with `from fixtures_emulator import *`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import requests

from github_emulator import (
    Dataset,
    DatasetSpec,
    EmulatorConfig,
    EmulatorServer,
    TokenConfig,
    build_dataset,
)

__all__ = [
    "EMU_SPEC",
    "EMU_TOKEN_COLLAB",
    "EMU_TOKEN_PLAIN",
    "emu_client",
    "emu_dataset",
    "emu_fresh_dataset",
    "emu_server",
    "emu_server_factory",
    "emu_tokens",
]

EMU_SPEC = DatasetSpec(seed=7, n_repos=10, n_users=500, max_per_repo=250)
# "collab" is a collaborator everywhere and may read emails; "plain" is neither.
EMU_TOKEN_COLLAB = "emu-tok-collab-0123456789"
EMU_TOKEN_PLAIN = "emu-tok-plain-9876543210"


def emu_tokens(**overrides: object) -> list[TokenConfig]:
    """The two standard test tokens; overrides apply to both (e.g. core_limit=3)."""
    return [
        TokenConfig(name="collab", token=EMU_TOKEN_COLLAB, collaborator_repos=("*",), **overrides),
        TokenConfig(name="plain", token=EMU_TOKEN_PLAIN, scopes=("repo",), **overrides),
    ]


@pytest.fixture(scope="session")
def emu_dataset() -> Dataset:
    """Shared, read-only dataset. Tests that mutate must use emu_fresh_dataset."""
    return build_dataset(EMU_SPEC)


@pytest.fixture
def emu_fresh_dataset() -> Dataset:
    return build_dataset(EMU_SPEC)


@pytest.fixture
def emu_server_factory(emu_dataset: Dataset) -> Iterator[Callable[..., EmulatorServer]]:
    """start(dataset=None, tokens=None, **EmulatorConfig fields) -> a running server, stopped after the test."""
    servers: list[EmulatorServer] = []

    def start(
        dataset: Dataset | None = None, tokens: list[TokenConfig] | None = None, **config: object
    ) -> EmulatorServer:
        cfg = EmulatorConfig(tokens=tokens if tokens is not None else emu_tokens(), **config)
        srv = EmulatorServer(dataset or emu_dataset, cfg).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture
def emu_server(emu_server_factory: Callable[..., EmulatorServer]) -> EmulatorServer:
    return emu_server_factory()


@pytest.fixture
def emu_client() -> Iterator[Callable[[str | None], requests.Session]]:
    """emu_client(token) -> a requests.Session sending that token (None = unauthenticated)."""
    sessions: list[requests.Session] = []

    def make(token: str | None = EMU_TOKEN_COLLAB) -> requests.Session:
        s = requests.Session()
        if token:
            s.headers["Authorization"] = f"Bearer {token}"
        sessions.append(s)
        return s

    yield make
    for s in sessions:
        s.close()
