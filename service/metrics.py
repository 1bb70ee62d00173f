"""Prometheus metrics, declared once; every module that counts imports from here."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

from schemas import PromptProvenance

LLM_CALLS = Counter("newsdigest_llm_calls_total", "Model calls by prompt and outcome.", ["prompt", "outcome"])
LLM_RETRIES = Counter("newsdigest_llm_retries_total", "Retried model attempts.", ["prompt", "error_type"])
LLM_TOKENS = Counter("newsdigest_llm_tokens_total", "Tokens used.", ["prompt", "direction"])
LLM_LATENCY = Histogram(
    "newsdigest_llm_call_seconds",
    "The model's time per call: its HTTP attempts, retries included; waiting for a slot is "
    "newsdigest_llm_queue_seconds.",
    ["prompt"],
    buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160),
)
LLM_QUEUE = Histogram(
    "newsdigest_llm_queue_seconds",
    "Time a model call waited for a concurrency slot (LLM_MAX_CONCURRENCY) and the shared rate window.",
    ["prompt"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160),
)
LLM_COST = Counter(
    "newsdigest_llm_cost_usd_total", "Dollars spent on model calls, by the dated price table (service/llm/costs.py); "
    "calls to models the table does not know are not counted.", ["prompt", "model"]
)
REASKS = Counter("newsdigest_reasks_total", "Re-asks sent to the model.", ["prompt"])
REJECTED = Counter("newsdigest_rejected_items_total", "Facts or items dropped after the re-ask.", ["prompt"])
HTTP_REQUESTS = Counter("newsdigest_http_requests_total", "API requests.", ["method", "route", "status"])
HTTP_LATENCY = Histogram("newsdigest_http_request_seconds", "API request latency.", ["method", "route"])
JOBS = Counter("newsdigest_jobs_total", "Finished jobs by kind and status.", ["kind", "status"])
QUEUE_DEPTH = Gauge("newsdigest_job_queue_depth", "Jobs waiting to run.")
WEBHOOK_EVENTS = Counter(
    "newsdigest_webhook_events_total", "CMS webhook deliveries by event type and outcome.", ["type", "outcome"]
)
CALLBACKS = Counter("newsdigest_callbacks_total", "digest.updated delivery attempts by outcome.", ["outcome"])
REPAIRED = Counter("newsdigest_repaired_items_total", "Facts whose citation the service moved to the sentences "
                   "that state them.", ["prompt"])


def record_outcomes(provenances: Iterable[PromptProvenance]) -> None:
    """Count what the pipeline reports in its provenance, at the edge where its result is kept."""
    for prov in provenances:
        REASKS.labels(prompt=prov.prompt).inc(prov.reasks)
        REJECTED.labels(prompt=prov.prompt).inc(prov.rejected)
        REPAIRED.labels(prompt=prov.prompt).inc(prov.repaired)
