"""The GraphQL schema the emulator serves: a strict subset of GitHub's, kept as SDL next to this file."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from graphql import GraphQLSchema, build_schema

SDL_PATH = Path(__file__).with_name("schema.graphql")


def schema_sdl() -> str:
    return SDL_PATH.read_text(encoding="utf-8")


@cache
def load_schema() -> GraphQLSchema:
    # Built with full validation (unlike GitHub's own SDL, the subset is consistent).
    return build_schema(schema_sdl())
