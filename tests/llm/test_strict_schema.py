"""Every schema the service sends in a strict mode is one OpenAI's strict mode accepts, and the limits it
moves out of the schema stay enforced by Pydantic on receipt."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field, ValidationError

from schemas.digest import DigestDraft
from schemas.facts import KeyFactsDraft
from service.llm.schema import (
    MAX_NESTING,
    SchemaError,
    drop_added_nulls,
    nesting_depth,
    strict_problems,
    strict_schema,
)
from service.prompts import PromptRegistry

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"


def every_prompt_output_model() -> list[tuple[str, type[BaseModel]]]:
    """(name@version, output model) of every prompt version there is, active or not."""
    registry = PromptRegistry.load(PROMPTS_DIR, strict=False)
    return [(p.ref, p.output_type) for p in registry.all()]


PROMPT_MODELS = every_prompt_output_model()


def test_there_are_prompts_to_check() -> None:
    assert {ref.split("@")[0] for ref, _ in PROMPT_MODELS} == {"key_facts", "sentiment", "digest"}


@pytest.mark.parametrize(("ref", "model"), PROMPT_MODELS, ids=[ref for ref, _ in PROMPT_MODELS])
def test_every_prompts_strict_schema_is_in_openais_subset(ref: str, model: type[BaseModel]) -> None:
    raw = model.model_json_schema()
    assert strict_problems(raw), "the checker must see what is wrong with the unrewritten schema"

    sent = strict_schema(raw)

    assert strict_problems(sent) == []
    # Conservative: also within the older limit of 5 levels, and without the validation keywords some
    # models (fine-tuned ones) refuse.
    assert strict_problems(sent, max_nesting=5) == []
    assert nesting_depth(sent) <= 5
    text = json.dumps(sent)
    for keyword in ("minLength", "maxLength", "minItems", "maxItems", "minimum", "maximum", "title", "default"):
        assert f'"{keyword}"' not in text


@pytest.mark.parametrize(("ref", "model"), PROMPT_MODELS, ids=[ref for ref, _ in PROMPT_MODELS])
def test_moved_limits_are_still_enforced_on_receipt(ref: str, model: type[BaseModel]) -> None:
    """What the model may now write past a moved limit is refused by validation, which every stage runs."""
    sent = strict_schema(model.model_json_schema())
    moved = [note for note in _descriptions(sent) if "=" in note]
    assert moved, "each prompt's model has limits that were moved into descriptions"
    too_long = _violating_answer(model)
    with pytest.raises(ValidationError):
        model.model_validate(too_long)


def _descriptions(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        if isinstance(node.get("description"), str):
            found.append(node["description"])
        for key, value in node.items():
            children = value.values() if key == "properties" and isinstance(value, dict) else [value]
            for child in children:
                found += _descriptions(child)
    elif isinstance(node, list):
        for item in node:
            found += _descriptions(item)
    return found


def _violating_answer(model: type[BaseModel]) -> dict[str, Any]:
    name = model.__name__
    if name == "KeyFactsDraft":
        return {"facts": [{"claim": "x" * 401, "sentences": [1]}]}
    if name == "SentimentDraft":
        return {"overall": "positive", "score": 2.5, "sentences": [1]}
    return {"headline": "", "statements": [{"text": "A statement.", "facts": ["A1.F1"]}]}


def test_limits_move_into_the_description() -> None:
    sent = strict_schema(KeyFactsDraft.model_json_schema())
    fact = sent["properties"]["facts"]["items"]
    assert fact["properties"]["claim"] == {
        "description": "One self-contained factual claim. (minLength=1, maxLength=400)", "type": "string"}
    assert fact["properties"]["sentences"]["description"] == (
        "Numbers [n] of the sentences that state it. (minItems=1, maxItems=3)")
    assert sent["properties"]["facts"]["description"] == "maxItems=12"
    assert "$defs" not in sent  # nothing recursive: every reference is inlined


def test_optional_fields_become_required_and_nullable() -> None:
    sent = strict_schema(DigestDraft.model_json_schema())
    assert sent["required"] == ["headline", "statements", "disagreements"]
    assert sent["properties"]["disagreements"]["type"] == ["array", "null"]
    assert sent["properties"]["statements"]["type"] == "array"  # required already: not nullable


class _Mood(BaseModel):
    label: str = Field(default="neutral", pattern=r"^[a-z]+$", title="Mood label")
    note: str | None = None
    tags: list[str] = Field(default_factory=list, max_length=3)
    kind: str = Field(default="a", json_schema_extra={"enum": ["a", "b"]})


class _Node(BaseModel):
    name: str
    children: list[_Node] = Field(default_factory=list)
    mood: _Mood | None = None


def test_a_recursive_model_keeps_its_definition_and_passes() -> None:
    sent = strict_schema(_Node.model_json_schema())
    assert strict_problems(sent) == []
    assert sent["properties"]["children"]["items"] == {"$ref": "#/$defs/_Node"}
    assert sent["$defs"]["_Node"]["required"] == ["name", "children", "mood"]
    mood = sent["properties"]["mood"]
    assert {"type": "null"} in mood["anyOf"]
    label = mood["anyOf"][0]["properties"]["label"]
    assert label["type"] == ["string", "null"]
    assert label["description"] == "Mood label (pattern=^[a-z]+$, default=neutral)"
    assert mood["anyOf"][0]["properties"]["kind"]["enum"] == ["a", "b", None]


def test_nulls_for_optional_fields_are_dropped_on_receipt_and_defaults_apply() -> None:
    raw = _Node.model_json_schema()
    answer = {"name": "root", "children": [{"name": "leaf", "children": None, "mood": None}],
              "mood": {"label": None, "note": None, "tags": None, "kind": None}}
    cleaned = drop_added_nulls(answer, raw)
    # mood and note admit null themselves (X | None): their nulls are answers, not left-out fields.
    assert cleaned == {"name": "root", "children": [{"name": "leaf", "mood": None}], "mood": {"note": None}}
    node = _Node.model_validate(cleaned)
    assert node.mood is not None and (node.mood.label, node.mood.tags, node.mood.kind) == ("neutral", [], "a")
    # A null where the field is required stays, so validation refuses it.
    with pytest.raises(ValidationError):
        _Node.model_validate(drop_added_nulls({"name": None}, raw))


# --- the checker itself -----------------------------------------------------------------------------------


def _ok_object(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def test_checker_accepts_a_minimal_strict_schema() -> None:
    assert strict_problems(_ok_object(a={"type": "string"}, b={"type": ["integer", "null"]})) == []


@pytest.mark.parametrize(("schema", "problem"), [
    ({"type": "array", "items": {"type": "string"}}, "root: must be an object"),
    ({"anyOf": [_ok_object(a={"type": "string"})]}, "anyOf is not allowed at the root"),
    ({**_ok_object(a={"type": "string"}), "additionalProperties": True}, "additionalProperties must be false"),
    ({**_ok_object(a={"type": "string"}, b={"type": "string"}), "required": ["a"]}, "missing: b"),
    (_ok_object(a={"type": "string", "minLength": 1}), "keyword 'minLength' is not supported"),
    (_ok_object(a={"type": "string", "default": "x"}), "keyword 'default' is not supported"),
    (_ok_object(a={"allOf": [{"type": "string"}]}), "keyword 'allOf' is not supported"),
    (_ok_object(a={"type": "string", "if": {}}), "keyword 'if' is not supported"),
    (_ok_object(a={"type": "array"}), "an array must type its items"),
    (_ok_object(a={"type": "date"}), "type 'date' is not supported"),
    (_ok_object(a={"$ref": "#/definitions/X"}), "does not point into $defs"),
    (_ok_object(a={"description": "untyped"}), "no type"),
    (_ok_object(a={"type": "object", "properties": {}}), "additionalProperties must be false"),
])
def test_checker_finds_what_strict_mode_refuses(schema: dict[str, Any], problem: str) -> None:
    assert any(problem in p for p in strict_problems(schema)), strict_problems(schema)


def test_checker_allows_the_documented_constraints_on_request() -> None:
    schema = _ok_object(a={"type": "integer", "minimum": 1}, b={"type": "array", "items": {"type": "string"},
                                                                "maxItems": 3})
    assert strict_problems(schema)
    assert strict_problems(schema, allow_documented_constraints=True) == []


def test_checker_counts_nesting_levels() -> None:
    node: dict[str, Any] = _ok_object(leaf={"type": "string"})
    for _ in range(MAX_NESTING - 1):
        node = _ok_object(child=node)
    assert nesting_depth(node) == MAX_NESTING
    assert strict_problems(node) == []
    assert any("nest 10 levels deep, more than 5" in p for p in strict_problems(node, max_nesting=5))
    deeper = _ok_object(child=node)
    assert any("nest 11 levels deep" in p for p in strict_problems(deeper))


def test_checker_counts_properties_and_enum_values() -> None:
    many = _ok_object(**{f"p{i}": {"type": "string"} for i in range(5_001)})
    assert any("5001 properties" in p for p in strict_problems(many))
    enums = _ok_object(e={"type": "string", "enum": [f"v{i}" for i in range(1_001)]})
    assert any("1001 enum values" in p for p in strict_problems(enums))


def test_property_names_are_not_mistaken_for_keywords() -> None:
    class Headline(BaseModel):
        title: str
        default: bool
        minLength: int  # a property named like a keyword

    sent = strict_schema(Headline.model_json_schema())
    assert sorted(sent["properties"]) == ["default", "minLength", "title"]
    assert strict_problems(sent) == []


def test_an_untyped_array_cannot_be_made_strict() -> None:
    class Loose(BaseModel):
        items: list  # type: ignore[type-arg]

    with pytest.raises(SchemaError, match="no item type"):
        strict_schema(Loose.model_json_schema())
