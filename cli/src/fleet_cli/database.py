"""One piece of database work for a command, on the database the settings point at."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from fleet_store import stackfile
from fleet_store.settings import Settings

T = TypeVar("T")


def run_on_database(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run ``work`` on a connection of its own; connection and schema errors as a ConfigError."""
    from fleet_cli.cli import on_database  # cli imports the command modules that import this one

    return asyncio.run(on_database(stackfile.resolve_urls(settings).database_url, work))
