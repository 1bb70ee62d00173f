"""Settings errors as an operator reads them: one line naming the environment variable to fix."""

from __future__ import annotations

import os

from pydantic import AliasChoices, ValidationError

from service.settings.model import Settings


def env_name(field: str) -> str:
    """The environment variable an operator sets for ``field``: of its names, the one set in the
    environment, else the first (NEWSDIGEST_<FIELD> for a field without aliases)."""
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices):
        names = [name for name in alias.choices if isinstance(name, str)]
        return next((name for name in names if name in os.environ), names[0] if names else field)
    if isinstance(alias, str):
        return alias
    return "NEWSDIGEST_" + field.upper()


def _field_of(name: str) -> str:
    """The field an error location names: the field itself, or one of its aliases."""
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        if name in (field, alias) or (isinstance(alias, AliasChoices) and name in alias.choices):
            return field
    return name


def settings_error(exc: ValueError) -> str:
    """One line naming the environment variable and the problem; never the value, which may be a secret."""
    if not isinstance(exc, ValidationError):
        return " ".join(str(exc).split())
    problems = []
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        if error["type"] == "default_factory_not_called":
            continue  # a consequence of another field's error, reported on its own
        message = " ".join(str(error["msg"]).removeprefix("Value error, ").split())
        loc = error["loc"]
        if loc and isinstance(loc[0], str):
            field = _field_of(loc[0])
            name = env_name(field) if field in Settings.model_fields else field
            problems.append(f"{name}: {message}")
        else:
            problems.append(message)
    return "; ".join(problems) or "invalid settings"
