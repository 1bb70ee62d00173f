"""Published prompts never change; versions resolve as settings and requests pin them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from schemas import KeyFactsDraft
from service.errors import PromptError, UnknownPromptVersion
from service.prompts import PromptRegistry
from tests.factories import ROOT


def test_every_published_prompt_matches_the_lock() -> None:
    registry = PromptRegistry.load(ROOT / "prompts")
    assert registry.problems() == []
    assert {p.ref for p in registry.all()} >= {"key_facts@1", "sentiment@1", "digest@1"}
    assert registry.get("key_facts", 1).output_type is KeyFactsDraft


@pytest.fixture
def prompts_copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "prompts", tmp_path / "prompts")
    return tmp_path / "prompts"


def test_editing_a_published_version_fails_loading(prompts_copy: Path) -> None:
    path = prompts_copy / "key_facts" / "v1.md"
    path.write_text(path.read_text().replace("most important", "main"))
    with pytest.raises(PromptError, match=r"key_facts@1 changed after it was published: add v2 instead"):
        PromptRegistry.load(prompts_copy)


def test_a_new_version_must_be_locked_then_becomes_active(prompts_copy: Path) -> None:
    newest = PromptRegistry.load(prompts_copy).get("key_facts")
    old, new = newest.meta.version, newest.meta.version + 1
    text = newest.path.read_text().replace(f"version: {old}", f"version: {new}")
    (prompts_copy / "key_facts" / f"v{new}.md").write_text(text)
    with pytest.raises(PromptError, match=rf"key_facts@{new} is not in prompts.lock"):
        PromptRegistry.load(prompts_copy)
    lock = PromptRegistry.load(prompts_copy, strict=False).lock_text()
    (prompts_copy / "prompts.lock").write_text(lock)
    registry = PromptRegistry.load(prompts_copy)
    assert registry.get("key_facts").ref == f"key_facts@{new}"
    assert registry.resolve(["key_facts@1"])["key_facts"].ref == "key_facts@1"
    assert PromptRegistry.load(prompts_copy, {"key_facts": 1}).get("key_facts").ref == "key_facts@1"


@pytest.mark.parametrize(
    ("pin", "message"),
    [
        ("key_facts@9", "unknown prompt key_facts@9; known: key_facts@1, key_facts@2"),
        ("nope@1", "unknown prompt 'nope'"),
        ("key_facts", "must look like name@N"),
    ],
)
def test_unknown_pins_are_refused(pin: str, message: str) -> None:
    with pytest.raises(UnknownPromptVersion, match=message):
        PromptRegistry.load(ROOT / "prompts").resolve([pin])


def test_front_matter_with_unknown_keys_is_refused(prompts_copy: Path) -> None:
    path = prompts_copy / "sentiment" / "v1.md"
    path.write_text(path.read_text().replace("temperature:", "colour: red\ntemperature:"))
    with pytest.raises(PromptError, match="bad front matter"):
        PromptRegistry.load(prompts_copy, strict=False)
