"""Stored records turned into the API's response models (``schemas.api``), and the lookups they need."""

from __future__ import annotations

from typing import Final, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from schemas import ArticleView, DigestView, JobAccepted, JobResult, JobView
from schemas.api import ArticleStatus
from service.store import articles, extractions, jobs
from service.store.articles import ArticleRecord, Preparation
from service.store.digests import DigestRecord
from service.store.jobs import JobKind, JobRecord, JobStatus

# The routes' names for the kinds they queue (articles.py, digests.py).
ANALYZE: Final = JobKind.ANALYZE_ARTICLE
BUILD_DIGEST: Final = JobKind.BUILD_DIGEST


class Versioned(Protocol):
    """An article as a job key names it: a stored record, or what the intake just wrote."""

    @property
    def id(self) -> str: ...

    @property
    def dedupe_hash(self) -> str: ...


def analyze_dedupe_key(article: Versioned, pins: list[str]) -> str:
    """Same article, same text, same pins while still queued: one job (the CMS retries and re-sends).

    The text is named by its source hash, taken at intake from the body as received (the prepared
    text's hash does not exist yet): a body sent again byte for byte joins the queued job, and one that
    differs only in markup or spacing gets its own job, which finds the analysis in the cache.
    """
    return f"{_analyze_prefix(article)}{','.join(sorted(pins))}"


def _analyze_prefix(article: Versioned) -> str:
    return f"{ANALYZE}:{article.id}:{article.dedupe_hash[:16]}:"


def digest_dedupe_key(digest_id: str) -> str:
    """Unique per digest; it is how ``GET /v1/digests/{id}`` finds the job of a digest not built yet."""
    return f"{BUILD_DIGEST}:{digest_id}"


def job_url(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


def job_view(job: JobRecord) -> JobView:
    return JobView(
        id=job.id, kind=job.kind, status=job.status, attempts=job.attempts, max_attempts=job.max_attempts,
        error=job.error, result=JobResult.model_validate(job.result) if job.result is not None else None,
        created_at=job.created_at, updated_at=job.updated_at, run_after=job.run_after, finished_at=job.finished_at,
    )


def accepted(job: JobRecord, *, article_id: str | None = None, digest_id: str | None = None) -> JobAccepted:
    return JobAccepted(job_id=job.id, status=job.status, job_url=job_url(job.id), article_id=article_id,
                       digest_id=digest_id)


async def find_article(session: AsyncSession, ident: str) -> ArticleRecord | None:
    """By our id, else by the CMS's own id: the CMS need not remember ours."""
    record = await articles.get_article(session=session, article_id=ident)
    return record or await articles.get_article_by_cms_id(session=session, cms_id=ident)


async def article_view(session: AsyncSession, article: ArticleRecord, job: JobRecord | None = None) -> ArticleView:
    """The latest analysis of the article's current text; without one, where its job stands, and why an
    article that cannot be analysed failed (its text unusable, or its job's last error)."""
    extraction = None
    if article.is_prepared:
        extraction = await extractions.latest_for_article(session=session, article=article)
    common = {"id": article.id, "cms_id": article.cms_id, "story_id": article.story_id, "article": article.ref(),
              "updated_at": article.updated_at}
    if extraction is not None:
        return ArticleView(status="analysed", facts=extraction.facts, sentiment=extraction.sentiment,
                           provenance=extraction.provenance, **common)
    if job is None:
        job = await jobs.latest_by_dedupe_key(session=session, dedupe_key=_analyze_prefix(article), prefix=True)
    status: ArticleStatus = "queued"
    error = None
    if job is not None and job.status == JobStatus.RUNNING:
        # Its job marks an unusable article first and fails a moment later, in its own transaction: until
        # then the article is as running as its job, so the two never disagree.
        status = "running"
    elif article.preparation == Preparation.UNUSABLE:
        status, error = "failed", article.preparation_error
    elif job is not None and job.status == JobStatus.FAILED:
        status, error = "failed", job.error
    return ArticleView(status=status, error=error, job=job_view(job) if job is not None else None, **common)


def digest_view(record: DigestRecord) -> DigestView:
    return DigestView(id=record.id, story_id=record.story_id, article_ids=list(record.article_ids),
                      is_current=record.is_current, created_at=record.created_at, digest=record.digest)
