"""Options several commands share."""

from __future__ import annotations

from typing import Annotated

import typer

Pins = Annotated[list[str] | None, typer.Option("--prompt", help="Pin a prompt version, e.g. key_facts@1.")]
Model = Annotated[str | None, typer.Option(
    "--model", help="Model name sent with each call; overrides NEWSDIGEST_LLM_MODEL.")]
