"""Query and header parameters several routes share, and the response headers they document."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header, Query

from service.api.pages import Format

MAX_WAIT_S = 60

Wait = Annotated[float, Query(ge=0, le=MAX_WAIT_S, description=(
    "Seconds (0-60) to wait for the job; answers 200 with the result if it finishes in time, else 202."))]
Pins = Annotated[list[str], Query(alias="prompt", description=(
    "Pin a prompt version, e.g. `key_facts@1`; repeat for several. Unpinned prompts use the active version."))]
FormatOverride = Annotated[Format | None, Query(alias="format", description=(
    "Overrides Accept: `json`, `md` or `html` (lets a browser open the editor's page from a link)."))]

# Printable Latin-1 (what ``str.isprintable`` allows of a header), no space at either end (HTTP drops it).
_PRINTABLE = "!-~\u00a1-\u00ac\u00ae-\u00ff"
IDEMPOTENCY_KEY_PATTERN = f"^[{_PRINTABLE}]([ {_PRINTABLE}]*[{_PRINTABLE}])?$"
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=255, pattern=IDEMPOTENCY_KEY_PATTERN, description=(
        "Makes a retry safe: the same key with the same request replays the first answer "
        "(`Idempotent-Replayed: true`); with another request it is a 422, while the first still runs a 409. "
        "Scoped to the API key; kept for a day."))]

LOCATION: dict[str, Any] = {"Location": {"description": "The job's URL (`job_url`): poll it.",
                                         "schema": {"type": "string"}}}
REPLAYED: dict[str, Any] = {"Idempotent-Replayed": {
    "description": "`true` when this is the stored answer to an earlier request with the same Idempotency-Key.",
    "schema": {"type": "string", "enum": ["true"]}}}
RETRY_AFTER: dict[str, Any] = {"Retry-After": {"description": "Seconds to wait before polling again.",
                                               "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
