"""An article as the CMS sends it, and as the pipeline prepares it.

Text that enters the service is checked here, once, whatever door it comes through (the API body,
a CMS webhook, an id in a URL path, an article file): every model and path parameter that takes
text from outside uses ``Text``, so every database stores exactly what was accepted.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

#: A NUL character, or any UTF-16 surrogate: in a Python string a surrogate is always a lone one
#: (JSON's escaped pairs are joined when parsed), and it cannot be encoded as UTF-8.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
#: What JSON Schema can say of it: no NUL (a JSON string never carries a lone surrogate as text).
NO_NUL_PATTERN = "^[^\\u0000]*$"


def storable_text(value: str) -> str:
    """``value`` unchanged, or a ValueError: PostgreSQL refuses NUL in text (SQLite keeps it), and a
    lone surrogate is not Unicode text (it fails hashing and every UTF-8 encoder). Both are refused
    for every database alike, so a request means the same wherever it is stored."""
    found = _UNSTORABLE.search(value)
    if found is not None:
        what = "the NUL character" if found.group() == "\x00" else "a lone surrogate"
        raise ValueError(f"must not contain {what} (U+{ord(found.group()):04X}) at character {found.start()}")
    return value


class _NoNulInJsonSchema:
    """Adds the NUL rule to a string's JSON Schema as a ``pattern``."""

    def __get_pydantic_json_schema__(self, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema["pattern"] = NO_NUL_PATTERN
        return schema


#: Text from outside: no NUL, no lone surrogate (see :func:`storable_text`).
Text = Annotated[str, AfterValidator(storable_text), _NoNulInJsonSchema()]

#: Dates the store holds on every database, whatever the offset: the year as written is 1900 to 9998,
#: so the UTC instant (offsets are under a day) stays within 1899-12-31 and 9999-01-01.
MIN_YEAR, MAX_YEAR = 1900, 9998
DATE_TIME_PATTERN = "^(19[0-9]{2}|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-"
_DATE_TIME_START = re.compile(DATE_TIME_PATTERN)
_DATE_RULE = f"must be an RFC 3339 date-time string in the years {MIN_YEAR} to {MAX_YEAR}"


def _date_time_string(value: Any) -> Any:
    """Numbers (Unix times) and strings not starting with a year in range are refused before parsing."""
    if isinstance(value, str) and not _DATE_TIME_START.match(value):
        raise ValueError(_DATE_RULE)
    if isinstance(value, int | float):
        raise ValueError(_DATE_RULE)
    return value


def _storable_date_time(value: datetime) -> datetime:
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(_DATE_RULE)
    try:
        value.astimezone(UTC) if value.tzinfo is not None else value
    except OverflowError as exc:  # unreachable with offsets under a day; kept so no offset can crash a store
        raise ValueError(_DATE_RULE) from exc
    return value


class _DateTimeJsonSchema:
    def __get_pydantic_json_schema__(self, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema["pattern"] = DATE_TIME_PATTERN
        return schema


#: A date-time from outside that every store can hold (see ``MIN_YEAR`` and ``MAX_YEAR``).
StorableDateTime = Annotated[datetime, BeforeValidator(_date_time_string), AfterValidator(_storable_date_time),
                             _DateTimeJsonSchema()]


class ArticleIn(BaseModel):
    """One article from the CMS: plain text or HTML."""

    model_config = ConfigDict(extra="forbid")

    id: Text | None = Field(default=None, max_length=200, description="The CMS's own id for the article.")
    story_id: Text | None = Field(default=None, max_length=200, description="The story it belongs to.")
    outlet: Text = Field(min_length=1, max_length=200, description="Publication that wrote it.")
    title: Text = Field(default="", max_length=1000)
    body: Text = Field(description="Article text, or HTML when content_type is html.")
    content_type: Literal["text", "html"] = "text"
    url: Text | None = Field(default=None, max_length=2000)
    published_at: StorableDateTime | None = Field(
        default=None, description=f"RFC 3339, with an offset; the year as written is {MIN_YEAR} to {MAX_YEAR}.")
    language: Text | None = Field(default=None, max_length=20, description="BCP 47 tag if the CMS knows it.")


class Sentence(BaseModel):
    """One numbered sentence of the prepared text, with its character span."""

    model_config = ConfigDict(frozen=True)

    n: int = Field(ge=1, description="1-based number shown to the model as [n].")
    text: str
    start: int = Field(ge=0)
    end: int = Field(ge=0)


class PreparedArticle(BaseModel):
    """The text every later stage reads: clean, numbered, hashed."""

    model_config = ConfigDict(frozen=True)

    outlet: str
    title: str
    url: str | None = None
    published_at: datetime | None = None
    language: str | None = None
    story_id: str | None = None
    cms_id: str | None = None
    text: str
    sentences: tuple[Sentence, ...]
    content_hash: str = Field(description="sha256 of the prepared text.")

    def sentence(self, n: int) -> Sentence:
        return self.sentences[n - 1]
