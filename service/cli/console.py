"""The terminal: results on stdout, everything else (errors, warnings, progress) on stderr."""

from __future__ import annotations

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

out = Console()
# soft_wrap: an error stays one line whatever the terminal width, so scripts can read it.
err = Console(stderr=True, soft_wrap=True)


def progress() -> Progress:
    """A spinner on stderr that disappears when done, so it never mixes with the result."""
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                    transient=True)
