"""How a value from the environment is read and checked, before the settings hold it.

Each type here is a field's type in ``Settings``: the shorthand an operator writes in a shell (comma
lists, ``key_facts@2``, a plain ``postgresql://`` URL) is accepted besides JSON, and a value that
could only fail later (a secret the signing library rejects at the first event) is refused at start.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, SecretStr
from pydantic_settings import NoDecode


def _absolute(value: Path) -> Path:
    return value.expanduser().resolve()


def _comma_list(value: object) -> object:
    if isinstance(value, str) and not value.lstrip().startswith("["):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _prompt_versions(value: object) -> object:
    """Accept ``key_facts@2,sentiment@1`` as well as JSON."""
    if isinstance(value, str) and not value.lstrip().startswith("{"):
        versions: dict[str, int] = {}
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            name, at, version = item.partition("@")
            if not at or not name.strip() or not version.strip().isdigit():
                raise ValueError(f"expected name@version pairs like key_facts@2,sentiment@1, got {item!r}")
            versions[name.strip()] = int(version)
        return versions
    return value


def _async_driver(value: str) -> str:
    """Give plain database URLs the async driver the store needs."""
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if isinstance(value, str) and value.startswith(plain):
            return driver + value[len(plain) :]
    return value


def _waits_not_negative(value: list[float]) -> list[float]:
    if any(wait < 0 for wait in value):
        raise ValueError("waits must be 0 or more seconds")
    return value


def _endpoint_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:11434/v1")
    return value


def _callback_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value


def _standard_webhooks_secret(value: SecretStr) -> SecretStr:
    """Refuse at start-up a secret the signing library would choke on at the first event."""
    raw = value.get_secret_value().removeprefix("whsec_").rstrip("=")
    try:
        decoded = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except ValueError:
        decoded = b""
    if not decoded:
        raise ValueError("must be a Standard Webhooks secret: whsec_ followed by base64")
    return value


#: Relative paths are taken from the working directory; ``~`` is the user's home.
AbsolutePath = Annotated[Path, AfterValidator(_absolute)]
#: NoDecode: plain comma-separated values are accepted, not only JSON.
SecretList = Annotated[list[SecretStr], NoDecode, BeforeValidator(_comma_list)]
NameList = Annotated[list[str], NoDecode, BeforeValidator(_comma_list)]
WaitList = Annotated[list[float], NoDecode, BeforeValidator(_comma_list), AfterValidator(_waits_not_negative)]
PromptVersions = Annotated[dict[str, int], NoDecode, BeforeValidator(_prompt_versions)]
DatabaseURL = Annotated[str, BeforeValidator(_async_driver)]
EndpointURL = Annotated[str, AfterValidator(_endpoint_url)]
CallbackURL = Annotated[str, AfterValidator(_callback_url)]
WebhookSecret = Annotated[SecretStr, AfterValidator(_standard_webhooks_secret)]
