"""The intake: what it checks before storing an article (only what costs microseconds), and how it writes.

``POST /v1/articles`` and the CMS webhook answer within milliseconds at hundreds of events a second,
so the request path never prepares an article (HTML to text, sentence splitting, hashing the text:
up to tens of milliseconds of one core for a long page, during which no other request would move).
The analysis job does that (``service.jobs.tasks``), and an article that turns out to hold no
readable sentence is marked unusable there, its job failed with the reason.

Refused here, before anything is written: a body over ``max_article_chars`` (413) and a body
without a single letter or digit (422 ``empty-article``): ``prepare`` keeps only sentences with
one, whatever the markup, so such a body can never make one. JSON shape and field rules were
checked by ``schemas.ArticleIn`` already.

Writing: :class:`IntakeWriter` commits the intake transactions of concurrent requests together
(group commit). Each request's writes run in arrival order inside one transaction, and each request
is answered once that transaction has committed, exactly as if it had its own: a 202 still means
stored. What is shared is the cost that does not depend on the request: BEGIN and COMMIT (two round
trips each), the story refresh already queued by an earlier event of the same batch, and on SQLite
the one write lock, which concurrent transactions would otherwise take turns at through SQLite's
sleeping busy handler (seconds at the tail). A batch is whatever arrived while the previous one was
being written, so one request alone waits for nobody. When a batch fails, each of its requests is
written again alone, so one bad request fails only itself.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, TypeVar

import structlog
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import ArticleIn
from service.errors import ArticleTooLargeError, EmptyArticleError

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: A letter or digit in any script: ``str.isalnum``, which is what ``prepare`` asks of a sentence.
_LETTER_OR_DIGIT = re.compile(r"[^\W_]")


def check_article(article: ArticleIn, *, max_chars: int) -> None:
    """Raise the InputError the article earns without preparing it; otherwise return at once."""
    if len(article.body) > max_chars:
        raise ArticleTooLargeError(
            f"article body has {len(article.body)} characters; the limit is {max_chars}", limit=max_chars)
    if _LETTER_OR_DIGIT.search(article.body) is None:
        raise EmptyArticleError("article has no readable sentence: its body holds no letter or digit")


@dataclass
class Batch:
    """The transaction a request's writes run in, shared with the other requests of its batch.

    ``memo`` keeps what an earlier request of the batch already wrote and a later one would write
    again with the same outcome (a story refresh joins the queued one: inside one transaction that
    is the job queued a moment before), keyed by the caller.
    """

    session: AsyncSession
    memo: dict[Any, Any] = field(default_factory=dict)


@dataclass
class _Pending(Generic[T]):
    work: Callable[[Batch], Awaitable[T]]
    done: asyncio.Future[T]
    #: The request's context (its log fields, its trace): its writes run in it, as if it wrote alone.
    context: contextvars.Context = field(default_factory=contextvars.copy_context)


class IntakeWriter:
    """Group commit for the intake: ``await writer.write(work)`` runs ``work(batch)`` in a shared transaction."""

    def __init__(self, sessions: Callable[[], AsyncSession], *, max_batch: int = 64) -> None:
        self._sessions = sessions
        self._max_batch = max_batch
        self._waiting: list[_Pending[Any]] = []
        self._writing: list[_Pending[Any]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def write(self, work: Callable[[Batch], Awaitable[T]]) -> T:
        """The result of ``work`` once its transaction has committed; its exception if it failed."""
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Pending(work, done))
        if self._flusher is None or self._flusher.done():
            # A context of its own: each request's writes run in that request's (see _commit).
            self._flusher = asyncio.get_running_loop().create_task(self._flush(), context=contextvars.Context())
        # A client gone away cancels its request, not the batch: its writes commit with the others.
        return await asyncio.shield(done)

    async def _flush(self) -> None:
        try:
            await self._flush_all()
        except BaseException as exc:  # cancelled (shutdown): no request may wait for a batch that never comes
            for pending in self._writing + self._waiting:
                _settle(pending, exc=exc)
            self._writing, self._waiting = [], []
            raise

    async def _flush_all(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:self._max_batch], self._waiting[self._max_batch:]
            self._writing = batch
            try:
                results = await self._commit(batch)
            except Exception as exc:  # one request's failure must not fail the others: each alone
                if len(batch) == 1:
                    _settle(batch[0], exc=exc)
                    continue
                log.warning("intake.batch_failed", requests=len(batch), error_type=type(exc).__name__)
                for pending in batch:
                    try:
                        (result,) = await self._commit([pending])
                    except Exception as alone:
                        _settle(pending, exc=alone)
                    else:
                        _settle(pending, result=result)
                    await asyncio.sleep(0)
                continue
            for pending, result in zip(batch, results, strict=True):
                _settle(pending, result=result)
                # One answer per turn of the loop: woken all at once, the batch's requests would finish
                # back to back in one turn and hold the loop for all of them (30 ms for 32).
                await asyncio.sleep(0)

    async def _commit(self, batch: list[_Pending[Any]]) -> list[Any]:
        loop = asyncio.get_running_loop()
        async with self._sessions() as session, session.begin():
            shared = Batch(session)
            # One after another on the one session; each in its request's context.
            return [await loop.create_task(_run(pending.work, shared), context=pending.context) for pending in batch]


async def _run(work: Callable[[Batch], Awaitable[T]], batch: Batch) -> T:
    return await work(batch)


def _settle(pending: _Pending[Any], *, result: Any = None, exc: BaseException | None = None) -> None:
    if pending.done.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        pending.done.cancel()
    elif exc is not None:
        pending.done.set_exception(exc)
    else:
        pending.done.set_result(result)


def intake_writer(request: Request) -> IntakeWriter:
    """The app's writer, made on first use for the running runtime (one per app start)."""
    state = request.app.state
    runtime = state.runtime
    current: tuple[Any, IntakeWriter] | None = getattr(state, "intake_writer", None)
    if current is None or current[0] is not runtime:
        current = (runtime, IntakeWriter(runtime.sessions))
        state.intake_writer = current
    return current[1]


WriterDep = Annotated[IntakeWriter, Depends(intake_writer)]
