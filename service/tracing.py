"""OpenTelemetry traces, optional: a webhook or API request, the jobs it queues and each model call.

Off unless an OTLP endpoint is configured (``NEWSDIGEST_OTEL_ENDPOINT``, or the standard
``OTEL_EXPORTER_OTLP_ENDPOINT``) and the ``otel`` extra is installed (``pip install
'newsdigest[otel]'``): the OpenTelemetry packages are imported only then, so the service runs
without them and every helper here is a no-op.

One trace follows the work across processes: the request's span (:func:`instrument_app`, which
continues a caller's ``traceparent``) is the parent of the job a route queues, because the job's
payload carries the W3C trace context (:func:`inject`, under the key :data:`TRACE_KEY`); the worker
that runs the job, in this process or another, continues it (:func:`job_span`); each model call is a
span of its own (``service.llm.client``), with the GenAI attributes (model, tokens, cost). Spans never
carry article text, prompts, answers, keys or query strings.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from service.settings import Settings

log = structlog.get_logger(__name__)

#: Where a job's payload keeps the trace context of the request that queued it.
TRACE_KEY = "_trace"
_TRACER_NAME = "newsdigest"

_lock = threading.Lock()
_provider: Any = None  # the SDK's TracerProvider while tracing is on


def enabled() -> bool:
    return _provider is not None


def configure(settings: Settings, *, exporter: Any = None) -> bool:
    """Turn tracing on for this process if the settings ask for it; True if it is on.

    ``exporter`` replaces the OTLP exporter (tests pass an in-memory one, and then no endpoint is needed).
    Calling it again replaces the previous configuration.
    """
    global _provider
    if exporter is None and not settings.otel_enabled:
        shutdown()
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        log.warning("tracing.unavailable", reason="the otel extra is not installed",
                    fix="pip install 'newsdigest[otel]', or unset NEWSDIGEST_OTEL_ENDPOINT")
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": settings.otel_service_name}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = str(settings.otel_endpoint).rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    with _lock:
        previous, _provider = _provider, provider
    if previous is not None:
        previous.shutdown()
    log.info("tracing.enabled", service=settings.otel_service_name, exporter=type(exporter).__name__
             if exporter is not None else "otlp-http")
    return True


def shutdown() -> None:
    """Flush and stop tracing (process exit, tests)."""
    global _provider
    with _lock:
        provider, _provider = _provider, None
    if provider is not None:
        provider.shutdown()


def _tracer() -> Any:
    return _provider.get_tracer(_TRACER_NAME) if _provider is not None else None


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (attributes or {}).items() if isinstance(v, str | bool | int | float)}


@contextlib.contextmanager
def span(name: str, *, kind: str = "internal", attributes: Mapping[str, Any] | None = None,
         context: Any = None) -> Iterator[Any]:
    """A span around the block, child of the current one (or of ``context``); yields it, or None when off.

    An exception leaving the block is recorded on the span (type only, never its message) and re-raised.
    """
    tracer = _tracer()
    if tracer is None:
        yield None
        return
    from opentelemetry.trace import SpanKind, Status, StatusCode

    span_kind = {"server": SpanKind.SERVER, "client": SpanKind.CLIENT, "consumer": SpanKind.CONSUMER,
                 "producer": SpanKind.PRODUCER}.get(kind, SpanKind.INTERNAL)
    with tracer.start_as_current_span(name, kind=span_kind, attributes=_clean(attributes), context=context,
                                      record_exception=False, set_status_on_exception=False) as current:
        try:
            yield current
        except BaseException as exc:
            current.set_attribute("error.type", type(exc).__name__)
            current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


def add_trace_ids(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the current span's ``trace_id`` and ``span_id`` on each log line (tracing on)."""
    if _provider is None:
        return event
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", f"{context.trace_id:032x}")
        event.setdefault("span_id", f"{context.span_id:016x}")
    return event


def set_attributes(current: Any, attributes: Mapping[str, Any]) -> None:
    """Add attributes to a span from :func:`span` (None when tracing is off: nothing happens)."""
    if current is not None:
        current.set_attributes(_clean(attributes))


def carrier() -> dict[str, str]:
    """The current trace context as W3C headers (``traceparent``, ``tracestate``); empty when off."""
    if _provider is None:
        return {}
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    headers: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(headers)
    return headers


def inject(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``payload`` with the current trace context under :data:`TRACE_KEY` (unchanged when off or outside a span)."""
    headers = carrier()
    return {**payload, TRACE_KEY: headers} if headers else dict(payload)


def _context_of(headers: Mapping[str, Any] | None) -> Any:
    if not headers:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({k: str(v) for k, v in headers.items()})


@contextlib.contextmanager
def job_span(kind: str, payload: Mapping[str, Any], **attributes: Any) -> Iterator[Any]:
    """The span of one job attempt, continuing the trace whose context the payload carries."""
    if _provider is None:
        yield None
        return
    trace_headers = payload.get(TRACE_KEY)
    parent = _context_of(trace_headers if isinstance(trace_headers, Mapping) else None)
    with span(f"job {kind}", kind="consumer", context=parent,
              attributes={"newsdigest.job.kind": kind, **{f"newsdigest.job.{k}": v for k, v in attributes.items()}}
              ) as current:
        yield current


class _TracingMiddleware:
    """One server span per HTTP request, continuing the caller's ``traceparent``; named by route, never
    by the raw path or query string (a link may carry an API key)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _provider is None:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])
                   if k in (b"traceparent", b"tracestate")}
        method = scope.get("method", "GET")
        status: dict[str, int] = {}

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        with span(method, kind="server", context=_context_of(headers),
                  attributes={"http.request.method": method}) as current:
            try:
                await self.app(scope, receive, send_status)
            finally:
                # Known once routing ran: the route's full template, never the path with its ids or query.
                route = _route_template(scope)
                if current is not None:
                    current.update_name(f"{method} {route}")
                set_attributes(current, {"http.route": route, "http.response.status_code": status.get("code", 500)})


def _route_template(scope: Scope) -> str:
    """The matched route's full template (``/v1/articles/{article_id}``), as the API's own metrics name it."""
    from service.api.middleware import route_template

    try:
        return route_template(scope)
    except (AttributeError, KeyError):  # an app without the API's route tables (tests, other apps)
        return str(getattr(scope.get("route"), "path", None) or "unmatched")


def instrument_app(app: Any) -> None:
    """Add request spans to a Starlette/FastAPI app (they cost nothing while tracing is off)."""
    app.add_middleware(_TracingMiddleware)
