"""Versioned prompts, loaded once into a registry that everything else reads.

A published prompt never changes: ``prompts/prompts.lock`` pins the sha256 of every
``name@version``, loading fails on a mismatch, and a new wording is a new ``v<N+1>`` file.
Every stored result names the prompt version and hash it came from.
"""

from __future__ import annotations

import hashlib
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, StrictUndefined, Template
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.errors import PromptError, UnknownPromptVersion

LOCK_FILE = "prompts.lock"
_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n(.*)\Z", re.DOTALL)
# Prompts are plain text for a model, never HTML: escaping would corrupt the article quotes.
_ENV = Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)  # noqa: S701


class PromptMeta(BaseModel):
    """A prompt file's front matter."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    version: int = Field(ge=1)
    schema_path: str = Field(alias="schema")
    temperature: float = Field(ge=0, le=2)
    max_tokens: int = Field(ge=16)
    description: str


@dataclass(frozen=True)
class Prompt:
    """One prompt version: metadata, output model and its Jinja2 template."""

    meta: PromptMeta
    path: Path
    sha256: str
    output_type: type[BaseModel]
    template: Template = field(repr=False)

    @property
    def ref(self) -> str:
        return f"{self.meta.name}@{self.meta.version}"

    def messages(self, **context: Any) -> list[dict[str, str]]:
        """System then user message; the user part ends with the task so prefixes are shared."""
        ctx = self.template.new_context(context)
        parts = {name: "".join(block(ctx)).strip() for name, block in self.template.blocks.items()}
        return [{"role": "system", "content": parts["system"]}, {"role": "user", "content": parts["user"]}]


def _resolve(path: str) -> type[BaseModel]:
    module_name, _, attr = path.rpartition(".")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise PromptError(f"prompt schema {path!r} cannot be imported") from exc
    if not (isinstance(target, type) and issubclass(target, BaseModel)):
        raise PromptError(f"prompt schema {path!r} is not a Pydantic model")
    return target


def load_prompt(path: Path) -> Prompt:
    raw = path.read_bytes()
    match = _FRONT_MATTER.match(raw.decode("utf-8"))
    if not match:
        raise PromptError(f"{path}: expected YAML front matter between '---' lines")
    try:
        meta = PromptMeta.model_validate(yaml.safe_load(match.group(1)))
    except (ValidationError, yaml.YAMLError) as exc:
        raise PromptError(f"{path}: bad front matter: {exc}") from exc
    if path.parent.name != meta.name or path.stem != f"v{meta.version}":
        raise PromptError(f"{path}: file must be prompts/{meta.name}/v{meta.version}.md")
    template = _ENV.from_string(match.group(2))
    missing = {"system", "user"} - set(template.blocks)
    if missing:
        raise PromptError(f"{path}: missing blocks {sorted(missing)}")
    return Prompt(meta, path, hashlib.sha256(raw).hexdigest(), _resolve(meta.schema_path), template)


def read_lock(directory: Path) -> dict[str, str]:
    lock = directory / LOCK_FILE
    if not lock.exists():
        return {}
    entries = (line.split() for line in lock.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return {ref: digest for ref, digest in entries}


class PromptRegistry:
    """All prompt versions under a directory, checked against the lock, with the active choice."""

    def __init__(self, prompts: list[Prompt], lock: dict[str, str], active: dict[str, int] | None = None) -> None:
        self._prompts = {p.ref: p for p in prompts}
        self.lock = lock
        self._active = dict(active or {})
        for name in {p.meta.name for p in prompts}:
            if name not in self._active:
                self._active[name] = max(p.meta.version for p in prompts if p.meta.name == name)
            self.get(name, self._active[name])  # fail at start-up, not mid-request

    @classmethod
    def load(cls, directory: Path, active: dict[str, int] | None = None, *, strict: bool = True) -> PromptRegistry:
        """Load every ``<name>/v<N>.md``; with ``strict``, any drift from the lock is an error."""
        prompts = [load_prompt(path) for path in sorted(directory.glob("*/v*.md"))]
        lock = read_lock(directory)
        registry = cls(prompts, lock, active)
        if strict and (problems := registry.problems()):
            raise PromptError("; ".join(problems))
        return registry

    def problems(self) -> list[str]:
        """Published versions whose text changed, and versions not yet locked."""
        found = []
        for ref, prompt in sorted(self._prompts.items()):
            locked = self.lock.get(ref)
            if locked is None:
                found.append(f"{ref} is not in {LOCK_FILE}: run `newsdigest prompts lock`")
            elif locked != prompt.sha256:
                found.append(f"{ref} changed after it was published: add v{prompt.meta.version + 1} instead")
        return found

    def lock_text(self) -> str:
        """The lock with new versions added; published entries are kept as they are."""
        entries = dict(self.lock)
        for ref, prompt in self._prompts.items():
            entries.setdefault(ref, prompt.sha256)
        ordered = sorted(entries.items(), key=lambda kv: (kv[0].split("@")[0], int(kv[0].split("@")[1])))
        return "# name@version sha256 — published prompts never change; add a new version instead\n" + "".join(
            f"{ref} {digest}\n" for ref, digest in ordered
        )

    def get(self, name: str, version: int | None = None) -> Prompt:
        version = self._active.get(name) if version is None else version
        prompt = self._prompts.get(f"{name}@{version}")
        if prompt is None:
            known = sorted(ref for ref in self._prompts if ref.startswith(f"{name}@"))
            raise UnknownPromptVersion(f"unknown prompt {name}@{version}; known: {', '.join(known) or 'none'}")
        return prompt

    def resolve(self, pins: list[str] | None = None) -> dict[str, Prompt]:
        """Active prompt per name, with request pins like ``key_facts@1`` applied."""
        chosen = dict(self._active)
        for pin in pins or []:
            name, sep, version = pin.partition("@")
            if not sep or not version.isdigit():
                raise UnknownPromptVersion(f"prompt pin {pin!r} must look like name@N")
            if name not in chosen:
                raise UnknownPromptVersion(f"unknown prompt {name!r}")
            chosen[name] = int(version)
        return {name: self.get(name, version) for name, version in chosen.items()}

    def all(self) -> list[Prompt]:
        return [self._prompts[ref] for ref in sorted(self._prompts)]

    @property
    def active(self) -> dict[str, int]:
        return dict(self._active)
