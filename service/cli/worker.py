"""``newsdigest worker``: a process that runs queued jobs, on the database worker or the procrastinate engine."""

from __future__ import annotations

from typing import Annotated

import typer

from service.cli.exit_codes import fail, run
from service.cli.startup import load_settings


def worker_command(
    queue: Annotated[list[str] | None, typer.Option(
        "--queue", help="procrastinate backend: take only this job kind (repeatable), e.g. send_callback.")] = None,
    concurrency: Annotated[int | None, typer.Option(
        min=1, help="Jobs this process runs at once (default NEWSDIGEST_WORKER_CONCURRENCY).")] = None,
) -> None:
    """Run queued jobs (analyses, digests) until Ctrl-C or SIGTERM; start as many as you need."""
    settings = load_settings()
    if concurrency is not None:
        settings = settings.model_copy(update={"worker_concurrency": concurrency})
    from service.jobs.runtime import metrics_endpoint, serve_worker

    if settings.job_backend == "procrastinate":
        try:
            from service.jobs.engine import serve_engine_worker
        except ImportError as exc:
            raise fail(f"NEWSDIGEST_JOB_BACKEND=procrastinate needs the scale extra "
                       f"(pip install 'newsdigest[scale]'): {exc}", 4) from None
        with metrics_endpoint(settings):
            run(serve_engine_worker(settings, queues=queue or None))
        return
    if queue:
        raise fail("--queue needs NEWSDIGEST_JOB_BACKEND=procrastinate", 4)
    run(serve_worker(settings))
