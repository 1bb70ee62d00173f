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
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

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


class IntakeWriter:
    """Group commit for the intake: ``await writer.write(work)`` runs ``work(batch)`` in a shared transaction."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, max_batch: int = 64) -> None:
        self._sessions = sessions
        self._max_batch = max_batch
        self._waiting: list[_Pending[Any]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def write(self, work: Callable[[Batch], Awaitable[T]]) -> T:
        """The result of ``work`` once its transaction has committed; its exception if it failed."""
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Pending(work, done))
        if self._flusher is None or self._flusher.done():
            # Its own context: the first request's bound log variables must not label the others' writes.
            self._flusher = asyncio.get_running_loop().create_task(self._flush(), context=contextvars.Context())
        # A client gone away cancels its request, not the batch: its writes commit with the others.
        return await asyncio.shield(done)

    async def _flush(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:self._max_batch], self._waiting[self._max_batch:]
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
                continue
            for pending, result in zip(batch, results, strict=True):
                _settle(pending, result=result)

    async def _commit(self, batch: list[_Pending[Any]]) -> list[Any]:
        async with self._sessions() as session, session.begin():
            shared = Batch(session)
            return [await pending.work(shared) for pending in batch]


def _settle(pending: _Pending[Any], *, result: Any = None, exc: BaseException | None = None) -> None:
    if pending.done.done():  # cancelled: nobody is waiting
        return
    if exc is not None:
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
