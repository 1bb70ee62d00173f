"""``Idempotency-Key`` on the POSTs: a CMS that retries after a timeout never queues the work twice.

Same key and same request: the first answer is replayed (``Idempotent-Replayed: true``). Same key,
different request: 422. Same key while the first is still running (it may be waiting with
``?wait=``): 409. Keys are scoped to the caller's API key. Only successful answers are kept: an
error releases the key, so bad input writes nothing and a corrected retry may reuse the key. A key
left in flight by a crash is released when this process starts again (``service.jobs.runtime``),
so the retry after a restart runs instead of answering 409 until the key goes stale.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.api.deps import Caller
from service.errors import IdempotencyKeyInUse, IdempotencyKeyReused, InputError
from service.jobs.context import LockHolder
from service.store import idempotency

log = structlog.get_logger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


def fingerprint(request: Request, body: Any, pins: list[str]) -> str:
    """What makes two requests the same: path, prompt pins and the body as parsed (not its whitespace).

    ``?wait=`` is left out: waiting longer or shorter asks for the same work.
    """
    material = {"path": request.url.path, "pins": sorted(pins), "body": body}
    return hashlib.sha256(json.dumps(material, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


async def idempotent(request: Request, caller: Caller, sessions: async_sessionmaker[AsyncSession], request_hash: str,
                     handle: Callable[[], Awaitable[JSONResponse]]) -> JSONResponse:
    """Run ``handle`` once per Idempotency-Key; without the header, just run it."""
    key = request.headers.get(HEADER)
    if key is None:
        return await handle()
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise InputError(f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable characters")
    holder: LockHolder = request.app.state.runtime.holder
    async with sessions() as session, session.begin():
        state = await idempotency.begin(session=session, key=key, api_key_hash=caller.key_hash,
                                        request_hash=request_hash, owner=holder.owner, run=holder.run)
    if state.conflict:
        raise IdempotencyKeyReused(f"this {HEADER} was used for a different request; use a new key")
    if state.state == "processing":
        raise IdempotencyKeyInUse(f"a request with this {HEADER} is still being processed; retry later")
    if state.state == "done":
        log.info("idempotency.replayed")
        headers = {"Idempotent-Replayed": "true"}
        if isinstance(state.response_body, dict) and state.response_status == 202:
            headers["Location"] = str(state.response_body.get("job_url", ""))
        return JSONResponse(state.response_body, status_code=state.response_status or 200, headers=headers)
    try:
        response = await handle()
    except BaseException:
        async with sessions() as session, session.begin():
            await idempotency.release(session=session, key=key, api_key_hash=caller.key_hash)
        raise
    async with sessions() as session, session.begin():
        await idempotency.complete(session=session, key=key, api_key_hash=caller.key_hash,
                                   response_status=response.status_code, response_body=json.loads(bytes(response.body)))
    return response
