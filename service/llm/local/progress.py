"""Progress lines for the person waiting on the embedded model's slow first steps."""

from __future__ import annotations

import sys


def say(message: str) -> None:
    """Written to stderr, so command output stays clean."""
    sys.stderr.write(f"newsdigest: {message}\n")
    sys.stderr.flush()
