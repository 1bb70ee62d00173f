"""What routes need, as ``Annotated`` aliases over small functions reading ``request.app.state``.

API keys: ``Authorization: Bearer <key>``, compared with ``hmac.compare_digest`` against every
configured key (no early exit, so timing does not tell how close a guess was). With no key
configured (allowed in development only) authentication is off and start-up logs it once.
Only the read-only digest pages (``ReaderDep``) also take the key from the ``newsdigest_key``
cookie, so an editor can open them in a browser (see ``service.api.pages``).

A caller is known by a keyed hash of their key (HMAC-SHA256 with ``key_hash_secret``, or a secret
derived from the configured keys and webhook secret): a copy of the database alone cannot confirm
a guessed API key. ``storable_path`` applies the text rule of ``schemas.article.Text`` to the ids
in every /v1 path, so an id with a NUL is a 422 naming it on every database.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyCookie, APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.article import storable_text
from service.errors import Unauthorized
from service.jobs.queue import JobQueue
from service.jobs.runtime import Runtime
from service.llm.port import Completer
from service.prompts import PromptRegistry
from service.settings import Settings

KEY_COOKIE = "newsdigest_key"
KEY_QUERY = "api_key"

_bearer = HTTPBearer(auto_error=False, description="One of NEWSDIGEST_API_KEYS.")
_cookie = APIKeyCookie(name=KEY_COOKIE, auto_error=False,
                       description="Set by opening a digest page once with ?api_key=; HTML pages only.")
_query = APIKeyQuery(name=KEY_QUERY, auto_error=False,
                     description="For a browser: moved into the cookie by a redirect on first use.")


@dataclass(frozen=True)
class Caller:
    """Who is calling: a keyed hash of their key scopes Idempotency-Keys (the key itself is never stored)."""

    key_hash: str


ANONYMOUS = Caller(key_hash="anonymous")


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    async with runtime.sessions() as session:
        yield session


def get_sessions(runtime: RuntimeDep) -> async_sessionmaker[AsyncSession]:
    return runtime.sessions


def get_llm(runtime: RuntimeDep) -> Completer:
    return runtime.llm


def get_registry(runtime: RuntimeDep) -> PromptRegistry:
    return runtime.registry


def get_queue(runtime: RuntimeDep) -> JobQueue:
    return runtime.queue


SessionDep = Annotated[AsyncSession, Depends(get_session)]
SessionsDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessions)]
LLMDep = Annotated[Completer, Depends(get_llm)]
RegistryDep = Annotated[PromptRegistry, Depends(get_registry)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]


def key_hash_secret(settings: Settings) -> bytes:
    """The HMAC key for caller hashes: the setting, else one derived from every configured secret."""
    if settings.key_hash_secret is not None:
        return settings.key_hash_secret.get_secret_value().encode()
    material = sorted(k.get_secret_value() for k in settings.api_keys)
    if settings.webhook_secret is not None:
        material.append(settings.webhook_secret.get_secret_value())
    return hashlib.sha256("\x00".join(["newsdigest caller hash v1", *material]).encode()).digest()


def caller_hash(settings: Settings, key: bytes) -> str:
    return hmac.new(key_hash_secret(settings), key, hashlib.sha256).hexdigest()


def check_key(settings: Settings, presented: str | None) -> Caller:
    """The caller for a presented key, or Unauthorized."""
    if not settings.api_keys:
        return ANONYMOUS
    if presented:
        given = presented.encode()
        matched = False
        for key in settings.api_keys:
            matched |= hmac.compare_digest(given, key.get_secret_value().encode())
        if matched:
            return Caller(key_hash=caller_hash(settings, given))
    raise Unauthorized("missing or invalid API key: send Authorization: Bearer <key>" if presented is None
                       else "invalid API key")


def require_api_key(settings: SettingsDep,
                    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Caller:
    return check_key(settings, credentials.credentials if credentials else None)


def require_reader(settings: SettingsDep,
                   credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                   cookie: Annotated[str | None, Depends(_cookie)],
                   query: Annotated[str | None, Depends(_query)]) -> Caller:
    """Bearer header, else the page cookie, else ``?api_key=`` (which the page then moves to the cookie)."""
    presented = credentials.credentials if credentials else (cookie or query)
    return check_key(settings, presented)


ApiKeyDep = Annotated[Caller, Depends(require_api_key)]
ReaderDep = Annotated[Caller, Depends(require_reader)]


def storable_path(request: Request) -> None:
    """422 naming each path id that holds text no store keeps alike (see ``schemas.article.storable_text``)."""
    errors = []
    for name, value in request.path_params.items():
        try:
            storable_text(str(value))
        except ValueError as exc:
            errors.append({"loc": ("path", name), "msg": f"Value error, {exc}", "type": "value_error"})
    if errors:
        raise RequestValidationError(errors)
