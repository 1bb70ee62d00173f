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

The articles of a batch (:class:`ArticleArrival`, both routes' writes) are also written together: one
multi-row statement each for their webhook deliveries, their rows and their jobs (a handful of round
trips for the batch instead of five or six per request), with exactly the outcome of writing them one
after another (``record_deliveries``, ``save_received_many`` and ``enqueue_many`` say how).
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, TypeVar

import structlog
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas import ArticleIn
from service import tracing
from service.api.views import ANALYZE, analyze_dedupe_key
from service.errors import ArticleTooLargeError, EmptyArticleError
from service.jobs.queue import JobQueue
from service.jobs.story_jobs import refresh_spec, schedule_refresh
from service.prompts import PromptRegistry
from service.settings import Settings
from service.store import articles
from service.store import webhooks as deliveries
from service.store.articles import Received, Receiving
from service.store.jobs import JobRecord, JobSpec

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
            results: list[Any] = []
            start = 0
            while start < len(batch):
                work = batch[start].work
                end = start + 1
                if isinstance(work, ArticleArrival):
                    while end < len(batch) and isinstance(batch[end].work, ArticleArrival):
                        end += 1
                if end - start > 1:  # neighbours written together, as they would be one after another
                    group = batch[start:end]
                    arrivals = [p.work for p in group if isinstance(p.work, ArticleArrival)]
                    results += await ArticleArrival.write_together(shared, arrivals, [p.context for p in group])
                else:  # one after another on the one session; each in its request's context
                    results.append(await loop.create_task(_run(work, shared), context=batch[start].context))
                start = end
            return results


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


@dataclass
class Arrived:
    """What :class:`ArticleArrival` wrote: nothing for a webhook-id seen before (``fresh`` False)."""

    fresh: bool
    record: Received | None = None
    analysis: JobRecord | None = None
    #: The story refreshes queued or joined, one per story the article joins or leaves.
    refreshes: list[str] = field(default_factory=list)


@dataclass
class ArticleArrival:
    """One request's article: its webhook delivery, the article as received, its analysis job and its
    stories' refreshes. Called with a batch it writes alone; :meth:`write_together` writes many."""

    article: ArticleIn
    queue: JobQueue
    settings: Settings
    pins: list[str] = field(default_factory=list)
    #: ``(webhook_id, event_type)``: recorded first, and a delivery seen before writes nothing else.
    delivery: tuple[str, str] | None = None
    #: Queue the debounced refresh of the story the article is in and of the one it left.
    refresh: bool = False

    async def __call__(self, batch: Batch) -> Arrived:
        session = batch.session
        if self.delivery is not None and not await deliveries.record_delivery(
                session=session, webhook_id=self.delivery[0], event_type=self.delivery[1]):
            return Arrived(fresh=False)
        record = await articles.save_received(session=session, article=self.article)
        analysis = await self.queue.submit(ANALYZE, {"article_id": record.id, "pins": self.pins},
                                           dedupe_key=analyze_dedupe_key(record, self.pins), session=session)
        refreshes = (await refresh_stories(batch, self.settings, {record.story_id, record.replaced_story_id})
                     if self.refresh else [])
        return Arrived(fresh=True, record=record, analysis=analysis, refreshes=refreshes)

    @staticmethod
    async def write_together(batch: Batch, arrivals: Sequence[ArticleArrival],
                             contexts: Sequence[contextvars.Context]) -> list[Arrived]:
        """What calling each arrival in turn would write and return, in one statement per table.

        Each job's payload carries the trace of its own request (``contexts``). The jobs' advisory
        locks are all taken by one statement, in one order (``enqueue_many``, through the queue, which
        wakes this process's worker once the batch has committed).
        """
        session = batch.session
        fresh = [True] * len(arrivals)
        hooked = [n for n, arrival in enumerate(arrivals) if arrival.delivery is not None]
        if hooked:
            recorded = await deliveries.record_deliveries(
                session=session, deliveries=[d for n in hooked if (d := arrivals[n].delivery) is not None])
            for n, is_new in zip(hooked, recorded, strict=True):
                fresh[n] = is_new
        todo = [n for n in range(len(arrivals)) if fresh[n]]
        if not todo:
            return [Arrived(fresh=False) for _ in arrivals]
        records = dict(zip(todo, await articles.save_received_many(
            session=session, items=[Receiving(arrivals[n].article) for n in todo]), strict=True))
        analyses: dict[int, JobRecord] = {}
        specs: list[JobSpec] = []
        owners: list[tuple[int, str | None]] = []  # per spec: the arrival, and the story it refreshes (or None)
        refreshed: dict[int, list[str]] = {}
        for n in todo:
            arrival, record, context = arrivals[n], records[n], contexts[n]
            # The analysis job as the queue's submit queues it (the queue's attempts are the setting's).
            payload = context.run(tracing.inject, {"article_id": record.id, "pins": arrival.pins})
            specs.append(JobSpec(ANALYZE, payload, analyze_dedupe_key(record, arrival.pins),
                                 max_attempts=arrival.settings.job_max_attempts))
            owners.append((n, None))
            if arrival.refresh:
                stories = sorted(s for s in {record.story_id, record.replaced_story_id} if s)
                refreshed[n] = stories
                for story in stories:
                    if ("refresh", story) not in batch.memo:  # else joined as is, as refresh_stories does
                        specs.append(context.run(refresh_spec, story, arrival.settings))
                        owners.append((n, story))
        queued = await arrivals[todo[0]].queue.submit_many(specs, session=session)
        for (n, refreshing), job in zip(owners, queued, strict=True):
            if refreshing is None:
                analyses[n] = job
            else:
                batch.memo.setdefault(("refresh", refreshing), job.id)
        return [Arrived(fresh=True, record=records[n], analysis=analyses[n],
                        refreshes=[batch.memo[("refresh", s)] for s in refreshed.get(n, [])])
                if fresh[n] else Arrived(fresh=False) for n in range(len(arrivals))]


async def refresh_stories(batch: Batch, settings: Settings, story_ids: set[str | None]) -> list[str]:
    """Each story's debounced refresh; one already queued by an earlier event of the batch is joined as is
    (within the batch's transaction, ``schedule_refresh`` would return that same queued job)."""
    ids = []
    for story in sorted(s for s in story_ids if s):
        key = ("refresh", story)
        if key not in batch.memo:
            batch.memo[key] = (await schedule_refresh(session=batch.session, story_id=story, settings=settings)).id
        ids.append(batch.memo[key])
    return ids


@dataclass(frozen=True)
class Intake:
    """What the intake routes need, in one dependency."""

    settings: Settings
    queue: JobQueue
    sessions: async_sessionmaker[AsyncSession]
    registry: PromptRegistry
    writer: IntakeWriter


async def intake(request: Request) -> Intake:
    """The app's settings, queue, sessions, prompts and writer (the writer made on first use for the running
    runtime).

    A coroutine: FastAPI runs a dependency that is a plain function in its thread pool, a hand-over
    that costs more CPU (about 0.1 ms, more on busy cores) than the whole lookup.
    """
    state = request.app.state
    runtime = state.runtime
    current: tuple[Any, IntakeWriter] | None = getattr(state, "intake_writer", None)
    if current is None or current[0] is not runtime:
        current = (runtime, IntakeWriter(runtime.sessions))
        state.intake_writer = current
    return Intake(settings=state.settings, queue=runtime.queue, sessions=runtime.sessions, registry=runtime.registry,
                  writer=current[1])


IntakeDep = Annotated[Intake, Depends(intake)]
