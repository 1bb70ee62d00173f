"""The openai SDK's exceptions as ``service.errors``, mapped at this one boundary so a stage never sees them."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from email.utils import parsedate_to_datetime
from typing import Any

import openai

from service.errors import LLMError, LLMHTTPError, LLMUnavailable


def retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date); None if absent or nonsense."""
    if headers is None:
        return None
    seconds: float | None = None
    if (ms := headers.get("retry-after-ms")) is not None:
        with suppress(ValueError):
            seconds = float(ms) / 1000
    if seconds is None and (value := headers.get("retry-after")) is not None:
        try:
            seconds = float(value)
        except ValueError:
            with suppress(TypeError, ValueError):
                seconds = parsedate_to_datetime(value).timestamp() - time.time()
    # NaN would make asyncio.sleep never wake, and the deadline would never apply.
    return max(0.0, seconds) if seconds is not None and math.isfinite(seconds) else None


@contextmanager
def map_openai_errors(url: str, timeout_s: float) -> Iterator[None]:
    try:
        yield
    except openai.APITimeoutError as exc:
        raise LLMUnavailable(f"the model endpoint {url} timed out after {timeout_s:g} s "
                             "(NEWSDIGEST_LLM_TIMEOUT_S)") from exc
    except openai.APIConnectionError as exc:
        raise LLMUnavailable(f"cannot reach the model endpoint {url} ({type(exc.__cause__ or exc).__name__})") from exc
    except openai.APIStatusError as exc:
        code = exc.code if isinstance(getattr(exc, "code", None), str) else None
        # Not chained and no body kept: an endpoint may echo the request's key in its error text,
        # and a traceback of openai's error would print it.
        raise LLMHTTPError(
            f"model endpoint answered {exc.status_code}" + (f" ({code})" if code else ""),
            status_code=exc.status_code,
            retry_after=retry_after(exc.response.headers),
            code=code,
        ) from None
    except openai.OpenAIError as exc:
        raise LLMError(f"model client error: {type(exc).__name__}") from exc


def timed_out(exc: BaseException | None) -> bool:
    """The attempt timed out: the endpoint may still be working on it, and may have billed it."""
    return isinstance(exc, LLMUnavailable) and isinstance(exc.__cause__, openai.APITimeoutError)
