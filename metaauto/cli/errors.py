"""How every ``metaauto`` command reports bad input: one line on stderr and exit status 2.

A module of its own so that the command modules (``cli``, ``cli_servers``, ``cli_stack``, ...) share it
without importing each other.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import typer

from metaauto.errors import MetaautoError

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(command: F) -> F:
    """Turn the library's input errors into ``error: ...`` on stderr and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except MetaautoError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]
