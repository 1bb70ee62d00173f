"""``Idempotency-Key`` bookkeeping, so a CMS retrying a POST never creates a second job.

The key is scoped to the API key that sent it. The first request with a key stores its request
hash as ``processing``; a retry then gets the stored response once it is ``done``, a 409 while it
is still running, and a 422 if it reuses the key for a different body (the IETF draft's rules).
A request that crashed mid-way leaves ``processing`` behind; after ``stale_after`` a retry takes
the key over, so a dead process cannot block a key for good. Sooner when the process comes back:
``begin`` records the process running the request (``lock_owner``, ``lock_run``, as a job's lock),
and a process that starts again under the same name releases the keys its dead run held
(:func:`held_runs`, :func:`release_runs`).

``begin`` must be committed on its own before the work starts, or concurrent retries cannot see it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.store import _dialect
from service.store.models import IdempotencyKey, utcnow


@dataclass(frozen=True)
class IdempotencyState:
    """What to do with a request carrying an Idempotency-Key.

    ``new``: go ahead, then :func:`complete`. ``processing``: another request with this key is
    running (409). ``done``: replay ``response_status`` and ``response_body``. ``conflict`` is set
    when the key was first used for a different request (422), whatever the state.
    """

    state: Literal["new", "processing", "done"]
    conflict: bool = False
    response_status: int | None = None
    response_body: Any = None


def _key(key: str, api_key_hash: str) -> tuple[Any, Any]:
    return IdempotencyKey.key == key, IdempotencyKey.api_key_hash == api_key_hash


async def begin(
    *,
    session: AsyncSession,
    key: str,
    api_key_hash: str,
    request_hash: str,
    stale_after: timedelta = timedelta(minutes=10),
    owner: str | None = None,
    run: str | None = None,
    now: datetime | None = None,
) -> IdempotencyState:
    """Claim ``key`` for this request, or report who holds it; ``owner`` and ``run`` name the process."""
    now = now or utcnow()
    holder = {"lock_owner": owner, "lock_run": run}
    claimed = await session.scalar(
        _dialect.insert(session, IdempotencyKey)
        .values(key=key, api_key_hash=api_key_hash, request_hash=request_hash, status="processing",
                created_at=now, updated_at=now, **holder)
        .on_conflict_do_nothing(index_elements=[IdempotencyKey.key, IdempotencyKey.api_key_hash])
        .returning(IdempotencyKey.key)
    )
    if claimed is not None:
        return IdempotencyState("new")
    # Take over an abandoned attempt with the same request; one statement, so one retry wins.
    taken = await session.scalar(
        update(IdempotencyKey)
        .where(*_key(key, api_key_hash), IdempotencyKey.request_hash == request_hash,
               IdempotencyKey.status == "processing", IdempotencyKey.updated_at < now - stale_after)
        .values(updated_at=now, **holder)
        .returning(IdempotencyKey.key)
        .execution_options(synchronize_session=False)
    )
    if taken is not None:
        return IdempotencyState("new")
    row = (await session.scalars(
        select(IdempotencyKey).where(*_key(key, api_key_hash)).execution_options(populate_existing=True)
    )).one()
    conflict = row.request_hash != request_hash
    if row.status == "done":
        return IdempotencyState("done", conflict, row.response_status, row.response_body)
    return IdempotencyState("processing", conflict)


async def complete(
    *, session: AsyncSession, key: str, api_key_hash: str, response_status: int, response_body: Any
) -> None:
    """Store the response that retries with this key will get from now on."""
    await session.execute(
        update(IdempotencyKey)
        .where(*_key(key, api_key_hash))
        .values(status="done", response_status=response_status, response_body=response_body, updated_at=utcnow(),
                lock_owner=None, lock_run=None)
        .execution_options(synchronize_session=False)
    )


async def release(*, session: AsyncSession, key: str, api_key_hash: str) -> None:
    """Forget an unfinished key after a failure worth retrying (a 5xx), so the retry runs anew."""
    await session.execute(
        delete(IdempotencyKey)
        .where(*_key(key, api_key_hash), IdempotencyKey.status == "processing")
        .execution_options(synchronize_session=False)
    )


async def held_runs(*, session: AsyncSession, owner: str) -> set[str]:
    """The runs of ``owner`` that hold keys still ``processing``."""
    rows = await session.scalars(
        select(IdempotencyKey.lock_run).distinct()
        .where(IdempotencyKey.lock_owner == owner, IdempotencyKey.status == "processing",
               IdempotencyKey.lock_run.is_not(None))
    )
    return {run for run in rows if run is not None}


async def release_runs(*, session: AsyncSession, owner: str, runs: Collection[str]) -> int:
    """Forget the ``processing`` keys that ``owner``'s ``runs`` held (those processes are gone, their
    requests with them), so a retry runs anew at once; returns how many."""
    if not runs:
        return 0
    stmt = (
        delete(IdempotencyKey)
        .where(IdempotencyKey.lock_owner == owner, IdempotencyKey.lock_run.in_(list(runs)),
               IdempotencyKey.status == "processing")
        .returning(IdempotencyKey.key)
        .execution_options(synchronize_session=False)
    )
    return len((await session.scalars(stmt)).all())


async def purge_keys(
    *, session: AsyncSession, older_than: timedelta = timedelta(hours=24), now: datetime | None = None
) -> int:
    """Forget keys untouched for ``older_than``; returns how many."""
    cutoff = (now or utcnow()) - older_than
    stmt = (
        delete(IdempotencyKey)
        .where(IdempotencyKey.updated_at < cutoff)
        .returning(IdempotencyKey.key)
        .execution_options(synchronize_session=False)
    )
    return len((await session.scalars(stmt)).all())
