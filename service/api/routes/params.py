"""Query parameters several routes share."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from service.api.pages import Format

MAX_WAIT_S = 60

Wait = Annotated[float, Query(ge=0, le=MAX_WAIT_S, description=(
    "Seconds (0-60) to wait for the job; answers 200 with the result if it finishes in time, else 202."))]
Pins = Annotated[list[str], Query(alias="prompt", description=(
    "Pin a prompt version, e.g. `key_facts@1`; repeat for several. Unpinned prompts use the active version."))]
FormatOverride = Annotated[Format | None, Query(alias="format", description=(
    "Overrides Accept: `json`, `md` or `html` (lets a browser open the editor's page from a link)."))]
