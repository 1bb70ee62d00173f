"""``newsdigest local-llm``: the embedded model server, started, stopped and checked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from service.cli.console import out
from service.cli.exit_codes import exit_code, fail
from service.cli.startup import load_settings
from service.errors import NewsdigestError
from service.settings import local_llm_url

app = typer.Typer(help="The embedded local model server.", no_args_is_help=True)


@app.command("start")
def local_start() -> None:
    """Assemble and check the embedded model, then serve it on 127.0.0.1."""
    from service.llm import local as local_llm

    settings = load_settings()
    try:
        pid = local_llm.start(settings)
    except NewsdigestError as exc:
        raise fail(exc.detail, exit_code(exc)) from None
    started = f" (pid {pid})" if pid else " (started by another checkout)"
    out.print(f"embedded model serving at {local_llm_url(settings.local_llm_port)}{started}")


@app.command("stop")
def local_stop() -> None:
    """Stop the embedded model server."""
    from service.llm import local as local_llm

    stopped = local_llm.stop(load_settings())
    out.print("stopped" if stopped else "not running")


@app.command("status")
def local_status() -> None:
    """Whether the embedded model server runs, and where."""
    from service.llm import local as local_llm

    state = local_llm.status(load_settings())
    out.print_json(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in vars(state).items()}))
    if not state.running:
        raise typer.Exit(1)
