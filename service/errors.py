"""One error tree for the whole service.

Every failure a caller can see is one of these, so the API and the CLI each translate them in
exactly one place (a problem+json body, or one line and an exit code)::

    NewsdigestError                 base; carries a stable problem ``type`` and an HTTP status
    ├── InputError                  the caller's fault: the article or request is unusable (4xx)
    │   ├── EmptyArticleError       nothing readable left after preparing the text
    │   ├── UnusableArticle         a stored article its analysis job found nothing to analyse in
    │   ├── ArticleTooLargeError     body over the configured size (413)
    │   ├── UndecodableArticleError bytes that are not text in any encoding we accept
    │   ├── NotFoundError           an article, digest, story or job id that does not exist (404)
    │   ├── InvalidEvent            a correctly signed webhook body that is not an event we read
    │   └── IdempotencyKeyReused    an Idempotency-Key sent again with a different request
    ├── Unauthorized                no valid API key on /v1 (401)
    ├── InvalidSignature            a webhook's signature headers missing, stale or wrong (401)
    ├── IdempotencyKeyInUse         the first request with this Idempotency-Key still runs (409)
    ├── CallbackFailed              the CMS did not take a digest.updated callback (retried)
    ├── LLMError                    the model or its endpoint failed us
    │   ├── LLMUnavailable          connection refused, reset or timed out (retried)
    │   ├── LLMHTTPError            an error status from the endpoint (429/5xx retried)
    │   └── LLMOutputError          an answer we cannot use
    │       ├── LLMRefusal          the model declined to answer
    │       └── LLMTruncated        the answer was cut off (finish_reason=length)
    ├── PromptError                 a prompt file, version or lock is wrong (our mistake)
    │   └── UnknownPromptVersion    a pinned prompt version that does not exist (422)
    └── ConfigError                 settings that cannot work (our mistake, or the operator's)

Stages catch these, never the SDK's exceptions: ``service.llm.openai_errors`` maps those at one boundary.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import ValidationError

#: Every problem ``type`` starts here; ``PROBLEM_TYPE + kind`` names one.
PROBLEM_TYPE = "https://newsdigest.dev/problems/"


class NewsdigestError(Exception):
    """Raised for any failure newsdigest reports to its caller."""

    type: ClassVar[str] = "about:blank"
    title: ClassVar[str] = "Newsdigest error"
    status: ClassVar[int] = 500

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        """The RFC 9457 body for this error; never carries secrets or article text."""
        return {"type": self.type, "title": self.title, "status": self.status, "detail": self.detail, **self.extra}


class InputError(NewsdigestError):
    """Raised when the caller's article or request cannot be used."""

    type = PROBLEM_TYPE + "invalid-input"
    title = "Invalid input"
    status = 422


class EmptyArticleError(InputError):
    """Raised when an article has no readable sentence after preparation."""

    type = PROBLEM_TYPE + "empty-article"
    title = "Article has no readable text"


class UnusableArticle(InputError):
    """Raised by an analysis job when the article's text holds nothing to analyse; the article keeps the reason."""


class ArticleTooLargeError(InputError):
    """Raised when an article body exceeds ``max_article_chars``."""

    type = PROBLEM_TYPE + "article-too-large"
    title = "Article too large"
    status = 413


class UndecodableArticleError(InputError):
    """Raised when an article file is binary or not valid text."""

    type = PROBLEM_TYPE + "undecodable-article"
    title = "Article is not text"


class NotFoundError(InputError):
    """Raised when an id names nothing stored."""

    type = PROBLEM_TYPE + "not-found"
    title = "Not found"
    status = 404


class LLMError(NewsdigestError):
    """Raised when the model endpoint fails or answers unusably."""

    type = PROBLEM_TYPE + "llm-error"
    title = "Language model failed"
    status = 502

    #: What the failed call cost (a ``schemas.CallUsage``), set by ``service.llm.client``.
    usage: Any = None
    #: The unusable answer's raw text, kept for the re-ask and for debugging.
    content: str | None = None


class LLMUnavailable(LLMError):
    """Raised when the endpoint cannot be reached or does not answer in time."""

    type = PROBLEM_TYPE + "llm-unavailable"
    title = "Language model unreachable"
    status = 503


class LLMHTTPError(LLMError):
    """Raised when the endpoint answers with an error status."""

    type = PROBLEM_TYPE + "llm-http-error"
    title = "Language model returned an error"

    def __init__(
        self,
        detail: str,
        *,
        status_code: int,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(detail, llm_status=status_code)
        self.status_code = status_code
        self.retry_after = retry_after
        self.code = code

    @property
    def retryable(self) -> bool:
        """429 (unless the quota is gone) and 5xx are worth another attempt."""
        if self.status_code == 429:
            return self.code != "insufficient_quota"
        return self.status_code >= 500


class LLMOutputError(LLMError):
    """Raised when the model answered but the answer cannot be used."""

    type = PROBLEM_TYPE + "llm-output"
    title = "Language model answer unusable"


class LLMRefusal(LLMOutputError):
    """Raised when the model refuses the task."""

    type = PROBLEM_TYPE + "llm-refusal"
    title = "Language model refused"


class LLMTruncated(LLMOutputError):
    """Raised when the answer was cut off at max_tokens."""

    type = PROBLEM_TYPE + "llm-truncated"
    title = "Language model answer cut off"


class PromptError(NewsdigestError):
    """Raised when a prompt file, version or lock entry is wrong."""

    type = PROBLEM_TYPE + "prompt-error"
    title = "Prompt error"
    status = 500


class UnknownPromptVersion(PromptError):
    """Raised when a request or setting pins a prompt version that does not exist."""

    type = PROBLEM_TYPE + "unknown-prompt-version"
    title = "Unknown prompt version"
    status = 422


class ConfigError(NewsdigestError):
    """Raised when settings cannot work."""

    type = PROBLEM_TYPE + "config-error"
    title = "Configuration error"
    status = 500


class InvalidEvent(InputError):
    """Raised when a correctly signed webhook body is not an event we can read."""

    type = PROBLEM_TYPE + "invalid-event"
    title = "Invalid webhook event"


class IdempotencyKeyReused(InputError):
    """Raised when an Idempotency-Key comes back with a different request."""

    type = PROBLEM_TYPE + "idempotency-key-reused"
    title = "Idempotency-Key reused for a different request"
    status = 422


class Unauthorized(NewsdigestError):
    """Raised when a request to /v1 has no valid API key."""

    type = PROBLEM_TYPE + "unauthorized"
    title = "Unauthorized"
    status = 401


class InvalidSignature(NewsdigestError):
    """Raised when a webhook's signature headers are missing, malformed, stale or do not match."""

    type = PROBLEM_TYPE + "invalid-signature"
    title = "Invalid webhook signature"
    status = 401


class IdempotencyKeyInUse(NewsdigestError):
    """Raised when a request with the same Idempotency-Key is still being processed."""

    type = PROBLEM_TYPE + "idempotency-key-in-use"
    title = "Request with this Idempotency-Key still in progress"
    status = 409


class CallbackFailed(NewsdigestError):
    """Raised when the CMS did not take a callback: no connection, a timeout or a non-2xx answer."""

    type = PROBLEM_TYPE + "callback-failed"
    title = "Callback to the CMS failed"
    status = 502


def validation_errors(exc: ValidationError, *, prefix: tuple[str | int, ...] = ()) -> list[dict[str, Any]]:
    """Where and why, never the value sent: ``{"loc", "msg", "type"}`` per error."""
    return [
        {"loc": [*prefix, *e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def validation_lines(exc: ValidationError, where: str = "") -> list[str]:
    """One line per error, ``where.loc: msg``: how a re-ask, a CLI error and a 422 detail list them."""
    lines = []
    for err in validation_errors(exc):
        loc = ".".join(str(part) for part in err["loc"])
        lines.append(f"{where}{'.' if where and loc else ''}{loc}: {err['msg']}")
    return lines
