"""What the HTTP API reads and answers, beyond the pipeline's own shapes (RFC 9457 problems included)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.article import Text
from schemas.digest import Digest
from schemas.extraction import ArticleRef, PromptProvenance
from schemas.facts import Fact
from schemas.sentiment import Sentiment


class JobStatus(StrEnum):
    """``queued -> running -> succeeded | failed``; the jobs table's CHECK constraint allows exactly these."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


ArticleStatus = Literal["queued", "running", "analysed", "failed"]


class FieldProblem(BaseModel):
    """One invalid field of a request; the offending value is never echoed back."""

    loc: list[str | int] = Field(description="Where the field is, e.g. ['body', 'outlet'].")
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem: every error answer, served as application/problem+json."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="Stable URI naming the kind of problem; branch on this, not on the text.")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = Field(default=None, description="The request path.")
    request_id: str | None = Field(default=None, description="Echoes X-Request-ID; quote it when reporting.")
    errors: list[FieldProblem] | None = Field(
        default=None, description="The invalid fields, for invalid-input and invalid-event: the first 50 of them.")
    errors_omitted: int | None = Field(default=None, description="Invalid fields beyond those listed in errors.")


class JobResult(BaseModel):
    """Ids of what a finished job produced."""

    model_config = ConfigDict(extra="allow")

    article_id: str | None = None
    extraction_id: str | None = None
    digest_id: str | None = None
    cache_hit: bool | None = Field(default=None, description="True when a stored result was reused (no LLM call).")


class JobView(BaseModel):
    """A background job: analysing an article or building a digest."""

    id: str
    kind: str
    status: JobStatus
    attempts: int = Field(description="Attempts started so far, interrupted ones included.")
    max_attempts: int
    error: str | None = Field(default=None, description="Why the last attempt failed.")
    result: JobResult | None = None
    created_at: datetime
    updated_at: datetime
    run_after: datetime = Field(description="Earliest start of the next attempt while queued.")
    finished_at: datetime | None = None


class JobAccepted(BaseModel):
    """A request taken on: poll ``job_url`` (or resend with ``?wait=S``) for the outcome."""

    job_id: str
    status: JobStatus
    job_url: str
    article_id: str | None = None
    digest_id: str | None = None


class ArticleView(BaseModel):
    """One stored article: its latest verified facts and sentiment, or where its analysis stands."""

    id: str
    cms_id: str | None = None
    story_id: str | None = None
    status: ArticleStatus = Field(description=(
        "queued (its text is prepared by the analysis job: until then `article` has no content_hash and "
        "sentence_count 0), running, analysed, or failed (see `error`)."))
    error: str | None = Field(default=None, description=(
        "Why the article has no analysis when status is failed: its text is unusable (no readable sentence "
        "once markup is removed, or over the size limit), or its analysis job's last error."))
    article: ArticleRef
    facts: list[Fact] = Field(default_factory=list)
    sentiment: Sentiment | None = None
    provenance: dict[str, PromptProvenance] = Field(default_factory=dict)
    job: JobView | None = Field(default=None, description="The latest analysis job, while there is no result.")
    updated_at: datetime


#: An article id in a digest request: ours or the CMS's own.
ArticleId = Annotated[Text, Field(min_length=1, max_length=200)]


class DigestRequest(BaseModel):
    """Which articles to digest: explicit ids, every live article of a story, or both.

    With both, every article must belong to that story: a story's digest holds only its own articles.
    """

    # The JSON Schema says what the validator below enforces: at least one of the two, and not as null.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [
        {"required": ["article_ids"], "properties": {"article_ids": {"type": "array"}}},
        {"required": ["story_id"], "properties": {"story_id": {"type": "string"}}},
    ]})

    article_ids: list[ArticleId] | None = Field(
        default=None,
        min_length=1,
        max_length=50,
        description="Article ids (ours or the CMS's own); each must exist, and belong to `story_id` if given.",
    )
    story_id: Text | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The story; alone, every live article of it is used, and the digest becomes its current one.",
    )

    @model_validator(mode="after")
    def _something_to_digest(self) -> DigestRequest:
        if not self.article_ids and not self.story_id:
            raise ValueError("give article_ids, story_id or both")
        return self


class DigestView(BaseModel):
    """A built digest with its bookkeeping."""

    id: str
    story_id: str | None = None
    article_ids: list[str]
    is_current: bool = Field(description="True for the digest GET /v1/stories/{id}/digest serves.")
    created_at: datetime
    digest: Digest


class PromptInfo(BaseModel):
    """One published prompt version."""

    name: str
    version: int
    ref: str = Field(description="name@version, as requests pin it.")
    sha256: str
    active: bool
    output_schema: str = Field(description="Dotted path of the Pydantic model the answer must match.")
    description: str
    temperature: float
    max_tokens: int


class PromptCatalog(BaseModel):
    active: dict[str, int] = Field(description="The version each prompt uses unless a request pins another.")
    prompts: list[PromptInfo]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "unready"]
    checks: dict[str, str] = Field(description="'ok' or why a dependency is not answering.")
