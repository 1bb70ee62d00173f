"""How a command fails: one line on stderr and an exit code a script can branch on.

2: bad input; 3: the model or its endpoint failed; 4: configuration. The API translates the same
error tree into problem+json bodies (``service.errors``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import typer
from rich.markup import escape

from service.cli.console import err
from service.errors import InputError, LLMError, NewsdigestError

T = TypeVar("T")


def exit_code(exc: NewsdigestError) -> int:
    if isinstance(exc, InputError):
        return 2
    if isinstance(exc, LLMError):
        return 3
    return 4


def fail(message: str, code: int) -> typer.Exit:
    """Print one error line; the caller raises what this returns."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, markup=True)
    return typer.Exit(code)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's work; our errors become one line on stderr and an exit code."""
    try:
        return asyncio.run(coro)
    except NewsdigestError as exc:
        raise fail(exc.detail, exit_code(exc)) from None
