"""``newsdigest serve``: the HTTP API, with the job worker in the same process unless told otherwise."""

from __future__ import annotations

from typing import Annotated

import typer

from service.cli.db import check_database
from service.cli.exit_codes import run
from service.cli.startup import load_settings


def serve(host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
          worker: Annotated[bool, typer.Option("--worker/--no-worker", help="Run jobs in this process too.")] = True,
          ) -> None:
    """The HTTP API (OpenAPI at /docs), with the job worker unless --no-worker."""
    import uvicorn

    from service.api import create_app
    from service.api.http import ProblemH11Protocol

    settings = load_settings()
    if not worker:
        settings = settings.model_copy(update={"run_worker": False})
    run(check_database(settings))
    # No access log: the API logs each request itself, by route and without the query string.
    uvicorn.run(create_app(settings), host=host, port=port, access_log=False, http=ProblemH11Protocol,
                log_level=settings.log_level, timeout_graceful_shutdown=int(settings.worker_shutdown_grace_s) + 5)
