"""structlog for the service processes: JSON lines in production, readable lines in development.

Request and job ids come from ``structlog.contextvars`` (bound by the request middleware and the
worker), so every line a request or job causes carries them. Article text and keys are never
logged at info level: events log ids, counts and outcomes. A request's crash is logged by
:func:`log_crash` as types and frames only: an exception's message or a rendered traceback would
carry SQL parameters (article text) and request values into the log.
"""

from __future__ import annotations

import logging
import sys
import traceback

import structlog

from service import tracing
from service.settings import Settings

_crash_log = structlog.get_logger("service.crash")


class _CurrentStderr:
    """Whatever sys.stderr is at write time: test runners and the CLI swap it after configuration."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(settings: Settings) -> None:
    """Call once per process (``serve``, ``worker``), never at import time."""
    level = getattr(logging, settings.log_level.upper())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if settings.environment == "production"
        # No local variables in tracebacks: they would print article text and keys.
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(),
                                           exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False))
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            tracing.add_trace_ids,  # trace_id/span_id when tracing is on: a log line finds its trace
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if settings.environment == "production"
            else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    # Alembic narrates every schema check, and the model client's HTTP library every request (the
    # client logs one llm.call line per call itself): only their problems matter to an operator.
    for noisy in ("alembic", "httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _short(filename: str) -> str:
    """A frame's file from its package down: ``fastapi/routing.py``, ``service/api/app.py``."""
    for marker in ("/site-packages/", "/service/", "/schemas/"):
        if marker in filename:
            head = "" if marker == "/site-packages/" else marker.strip("/") + "/"
            return head + filename.rsplit(marker, 1)[-1]
    return filename


def log_crash(exc: BaseException) -> None:
    """One line for a crash: the exception types (causes included) and the frames they passed, never a
    message (a database error's message holds the statement's parameters, article text included)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 5:
        chain.append(current)
        current = current.__cause__ or current.__context__
    frames = [f"{_short(frame.filename)}:{frame.lineno} in {frame.name}"
              for frame in traceback.extract_tb(exc.__traceback__)[-12:]]
    _crash_log.error("request.crashed", error_type=type(exc).__name__,
                    error_chain=[f"{type(e).__module__}.{type(e).__qualname__}" for e in chain], frames=frames)
