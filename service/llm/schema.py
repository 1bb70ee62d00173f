"""JSON Schemas as OpenAI's strict mode takes them, and a check of that subset.

Strict structured outputs (``response_format`` json_schema with ``strict: true``, and tools with
``strict: true``) accept a subset of JSON Schema: every object lists all its properties in
``required`` and sets ``additionalProperties: false``; an optional property is a required one that
may be null; validation keywords such as ``minLength`` or ``maxItems`` are refused by some models
(fine-tuned ones) and ignored by others. :func:`strict_schema` rewrites a Pydantic model's schema into
that subset, the way pydantic-ai's OpenAI profile does:

* ``title`` and ``default`` are dropped; an auto-generated title says nothing the name does not;
* the validation keywords of :data:`MOVED_KEYWORDS` move into the node's ``description``
  (``"... (minLength=1, maxLength=400)"``), so the model still reads the limits;
* every object gets ``additionalProperties: false`` and all its properties ``required``; a property
  that was optional becomes nullable (``"type": ["array", "null"]``, or ``anyOf`` with null);
* ``$ref`` is inlined where the model is not recursive (``$defs`` are left only for recursion,
  which OpenAI allows as ``#/$defs/...`` or ``#``); ``oneOf`` becomes ``anyOf``; ``allOf`` of one is merged.

The limits stay enforced, by Pydantic on receipt: every stage validates the answer with its model,
and :func:`drop_added_nulls` first removes the nulls the nullable rewrite let in, so a field's
default applies as if the model had left it out.

:func:`strict_problems` checks a schema against OpenAI's documented strict subset (see there).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

#: Keywords OpenAI's strict mode refuses or, depending on the model, does not enforce: they are moved
#: into the description. Pydantic enforces all of them when the answer is validated.
MOVED_KEYWORDS = (
    "minLength", "maxLength", "pattern", "format",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "minItems", "maxItems", "uniqueItems", "contains", "minContains", "maxContains", "unevaluatedItems",
    "patternProperties", "propertyNames", "minProperties", "maxProperties", "unevaluatedProperties",
)

#: Keywords a strict schema may use (OpenAI's "Supported schemas": types, properties, required,
#: additionalProperties, items, anyOf, enum, const, description, $ref and $defs for reuse and recursion).
STRICT_KEYWORDS = frozenset({
    "type", "properties", "required", "additionalProperties", "items", "anyOf", "enum", "const",
    "description", "$ref", "$defs",
})
#: Validation keywords OpenAI documents as supported for its non-fine-tuned models; :func:`strict_schema`
#: moves them anyway (every model takes the result), :func:`strict_problems` allows them on request.
DOCUMENTED_CONSTRAINTS = frozenset({
    "pattern", "format", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
    "minItems", "maxItems",
})
STRICT_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})

#: OpenAI's documented limits for one strict schema.
MAX_NESTING = 10
MAX_PROPERTIES = 5_000
MAX_STRING_CHARS = 120_000
MAX_ENUM_VALUES = 1_000

_DROPPED = ("title", "default", "$schema", "$id", "discriminator", "examples", "deprecated", "readOnly", "writeOnly")


class SchemaError(ValueError):
    """Raised when a schema cannot be expressed in the strict subset (an untyped array, a dangling $ref)."""


def _note(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")) if not isinstance(value, str) else value


def _auto_title(title: Any, name: str | None) -> bool:
    """Pydantic's own title (the field name title-cased, or the model's class name) says nothing new."""
    if not isinstance(title, str):
        return True
    if name is None:
        return True
    return title == name.replace("_", " ").title() or title.replace(" ", "") == name


def _nullable(node: dict[str, Any]) -> dict[str, Any]:
    """``node`` that also admits null, in a form strict mode accepts."""
    if "type" in node and "anyOf" not in node:
        types = node["type"] if isinstance(node["type"], list) else [node["type"]]
        if "null" not in types:
            node = {**node, "type": [*types, "null"]}
        if "enum" in node and None not in node["enum"]:
            node = {**node, "enum": [*node["enum"], None]}
        return node
    if "anyOf" in node:
        if not any(option.get("type") == "null" for option in node["anyOf"] if isinstance(option, dict)):
            node = {**node, "anyOf": [*node["anyOf"], {"type": "null"}]}
        return node
    description = node.get("description")
    inner = {k: v for k, v in node.items() if k != "description"}
    wrapped: dict[str, Any] = {"anyOf": [inner, {"type": "null"}]}
    if description is not None:
        wrapped["description"] = description
    return wrapped


class _Strict:
    def __init__(self, root: dict[str, Any]) -> None:
        self.defs: dict[str, Any] = root.get("$defs", {}) or {}
        self.recursive: set[str] = set()
        self.kept: dict[str, Any] = {}

    def ref_name(self, ref: str) -> str:
        if not ref.startswith("#/$defs/"):
            raise SchemaError(f"unsupported $ref {ref!r}: only #/$defs/... is resolved")
        name = ref.removeprefix("#/$defs/")
        if name not in self.defs:
            raise SchemaError(f"$ref {ref!r} names no definition")
        return name

    def walk(self, node: Any, *, name: str | None, stack: tuple[str, ...]) -> Any:
        if not isinstance(node, dict):
            return node
        node = dict(node)
        if "$ref" in node:
            ref_name = self.ref_name(node.pop("$ref"))
            if ref_name in stack:  # recursion: keep the reference, transform the definition once
                self.recursive.add(ref_name)
                target: dict[str, Any] = {"$ref": f"#/$defs/{ref_name}"}
            else:
                target = self.walk(self.defs[ref_name], name=ref_name, stack=(*stack, ref_name))
            if not node:
                return target
            # Siblings of a $ref (a field's description): merged into the inlined copy, or beside it in anyOf.
            siblings = self.walk(node, name=name, stack=stack)
            if "$ref" in target:
                return {**siblings, "anyOf": [target]}
            merged = {**target, **{k: v for k, v in siblings.items() if k != "description"}}
            if "description" in siblings:
                merged["description"] = siblings["description"]
            return merged
        if "allOf" in node and len(node["allOf"]) == 1:
            only = node.pop("allOf")[0]
            return self.walk({**only, **node}, name=name, stack=stack)
        if "oneOf" in node:
            node["anyOf"] = node.pop("oneOf")

        notes = [f"{key}={_note(node.pop(key))}" for key in MOVED_KEYWORDS if key in node]
        if node.get("default") is not None:  # a null default says what the nullable type already says
            notes.append(f"default={_note(node['default'])}")
        title = node.get("title")
        description = node.get("description")
        if not description and not _auto_title(title, name):
            description = str(title)
        for key in _DROPPED:
            node.pop(key, None)
        if notes:
            joined = ", ".join(notes)
            description = f"{description} ({joined})" if description else joined
        if description:
            node["description"] = description

        if "properties" in node or node.get("type") == "object":
            properties: dict[str, Any] = node.get("properties") or {}
            required = set(node.get("required", []))
            out: dict[str, Any] = {}
            for prop, sub in properties.items():  # names here, not keywords
                walked = self.walk(sub, name=prop, stack=stack)
                out[prop] = walked if prop in required else _nullable(walked)
            node["properties"] = out
            node["required"] = list(out)
            node["additionalProperties"] = False
        if node.get("type") == "array" or "items" in node:
            items = node.get("items")
            if not isinstance(items, dict) or not items:
                raise SchemaError(f"array {name or '(unnamed)'} has no item type; strict mode needs one")
            node["items"] = self.walk(items, name=None, stack=stack)
        if "anyOf" in node:
            node["anyOf"] = [self.walk(option, name=None, stack=stack) for option in node["anyOf"]]
        if "prefixItems" in node:
            raise SchemaError("tuples (prefixItems) are not in OpenAI's strict subset")
        return node


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (a Pydantic model's JSON Schema) rewritten into OpenAI's strict subset (module docstring)."""
    source = copy.deepcopy(schema)
    walker = _Strict(source)
    root_name = source.get("title") if isinstance(source.get("title"), str) else None
    body = {k: v for k, v in source.items() if k != "$defs"}
    result: dict[str, Any] = walker.walk(body, name=root_name, stack=())
    if walker.recursive:
        defs: dict[str, Any] = {}
        pending = sorted(walker.recursive)
        while pending:
            name = pending.pop()
            if name in defs:
                continue
            defs[name] = walker.walk(walker.defs[name], name=name, stack=(name,))
            pending += [n for n in sorted(walker.recursive) if n not in defs]
        result["$defs"] = defs
    return result


def drop_added_nulls(data: Any, schema: dict[str, Any]) -> Any:
    """``data`` without the nulls :func:`strict_schema` let into properties that were merely optional.

    ``schema`` is the original (Pydantic) schema. A null for a property that was not required and did
    not admit null itself is removed, so validation applies the field's default, as if it were left out.
    """
    defs = schema.get("$defs", {}) or {}

    def resolve(node: Any) -> Any:
        seen = 0
        while isinstance(node, dict) and "$ref" in node and seen < 50:
            node = defs.get(str(node["$ref"]).removeprefix("#/$defs/"), {})
            seen += 1
        return node

    def admits_null(node: Any) -> bool:
        node = resolve(node)
        if not isinstance(node, dict):
            return True
        types = node.get("type")
        if types == "null" or (isinstance(types, list) and "null" in types):
            return True
        if "enum" in node and None in node["enum"]:
            return True
        return any(admits_null(option) for option in node.get("anyOf", []) + node.get("oneOf", []))

    def walk(value: Any, node: Any) -> Any:
        node = resolve(node)
        if not isinstance(node, dict):
            return value
        if isinstance(value, dict) and "properties" in node:
            required = set(node.get("required", []))
            cleaned = {}
            for key, item in value.items():
                sub = node["properties"].get(key)
                if item is None and sub is not None and key not in required and not admits_null(sub):
                    continue
                cleaned[key] = walk(item, sub) if sub is not None else item
            return cleaned
        if isinstance(value, list) and isinstance(node.get("items"), dict):
            return [walk(item, node["items"]) for item in value]
        for option in node.get("anyOf", []) + node.get("oneOf", []):
            option = resolve(option)
            if isinstance(option, dict) and isinstance(value, dict) and "properties" in option:
                return walk(value, option)
            if isinstance(option, dict) and isinstance(value, list) and "items" in option:
                return walk(value, option)
        return value

    return walk(data, schema)


def _children(node: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(where, subschema) of every schema inside ``node``; property names are never taken for keywords."""
    for prop, sub in (node.get("properties") or {}).items():
        yield f"properties.{prop}", sub
    for name, sub in (node.get("$defs") or {}).items():
        yield f"$defs.{name}", sub
    if isinstance(node.get("items"), dict):
        yield "items", node["items"]
    for i, option in enumerate(node.get("anyOf") or []):
        yield f"anyOf[{i}]", option


def strict_problems(schema: dict[str, Any], *, allow_documented_constraints: bool = False,
                    max_nesting: int = MAX_NESTING) -> list[str]:
    """What OpenAI's strict mode would refuse in ``schema``; an empty list means it is accepted.

    The documented rules: the root is an object, not ``anyOf``; only :data:`STRICT_KEYWORDS` (and, with
    ``allow_documented_constraints``, :data:`DOCUMENTED_CONSTRAINTS`); every object sets
    ``additionalProperties: false`` and lists every property in ``required``; every type is one of
    :data:`STRICT_TYPES`; arrays type their items; ``$ref`` points into ``$defs`` (or is ``#``); objects
    nest at most ``max_nesting`` deep; at most 5,000 properties, 1,000 enum values and 120,000
    characters of names, enum and const values in all.
    """
    problems: list[str] = []
    allowed = STRICT_KEYWORDS | (DOCUMENTED_CONSTRAINTS if allow_documented_constraints else frozenset())
    defs = schema.get("$defs") or {}
    counts = {"properties": 0, "enum": 0, "chars": 0}

    if schema.get("type") != "object":
        problems.append("root: must be an object (type: object)")
    if "anyOf" in schema:
        problems.append("root: anyOf is not allowed at the root")

    def check(node: Any, where: str) -> None:
        if not isinstance(node, dict):
            problems.append(f"{where}: a schema must be an object, got {type(node).__name__}")
            return
        for key in node:
            if key not in allowed:
                problems.append(f"{where}: keyword {key!r} is not supported in strict mode")
        types = node.get("type")
        type_list = types if isinstance(types, list) else [types] if types is not None else []
        for t in type_list:
            if t not in STRICT_TYPES:
                problems.append(f"{where}: type {t!r} is not supported")
        if "$ref" in node:
            ref = node["$ref"]
            if ref != "#" and not (isinstance(ref, str) and ref.removeprefix("#/$defs/") in defs):
                problems.append(f"{where}: $ref {ref!r} does not point into $defs")
        elif not type_list and "anyOf" not in node and "enum" not in node and "const" not in node:
            problems.append(f"{where}: no type (type, anyOf, enum, const or $ref)")
        if "object" in type_list or "properties" in node:
            properties = node.get("properties")
            if not isinstance(properties, dict):
                problems.append(f"{where}: an object must list its properties")
                properties = {}
            counts["properties"] += len(properties)
            counts["chars"] += sum(len(p) for p in properties)
            if node.get("additionalProperties") is not False:
                problems.append(f"{where}: additionalProperties must be false")
            required = node.get("required")
            if not isinstance(required, list) or set(required) != set(properties):
                missing = sorted(set(properties) - set(required or []))
                problems.append(f"{where}: every property must be required (missing: {', '.join(missing)})")
        if "array" in type_list and not isinstance(node.get("items"), dict):
            problems.append(f"{where}: an array must type its items")
        if "enum" in node:
            values = node["enum"]
            counts["enum"] += len(values)
            counts["chars"] += sum(len(v) for v in values if isinstance(v, str))
        if isinstance(node.get("const"), str):
            counts["chars"] += len(node["const"])
        for child_where, sub in _children(node):
            check(sub, f"{where}.{child_where}")

    check(schema, "root")
    counts["chars"] += sum(len(name) for name in defs)
    nesting = nesting_depth(schema)
    if nesting > max_nesting:
        problems.append(f"root: objects nest {nesting} levels deep, more than {max_nesting}")
    if counts["properties"] > MAX_PROPERTIES:
        problems.append(f"root: {counts['properties']} properties, more than {MAX_PROPERTIES}")
    if counts["enum"] > MAX_ENUM_VALUES:
        problems.append(f"root: {counts['enum']} enum values, more than {MAX_ENUM_VALUES}")
    if counts["chars"] > MAX_STRING_CHARS:
        problems.append(f"root: {counts['chars']} characters of names and values, more than {MAX_STRING_CHARS}")
    return problems


def nesting_depth(schema: dict[str, Any]) -> int:
    """How deep objects nest in ``schema`` (the root object is level 1), following $ref."""
    defs = schema.get("$defs") or {}

    def depth(node: Any, seen: tuple[str, ...]) -> int:
        if not isinstance(node, dict):
            return 0
        if "$ref" in node:
            name = str(node["$ref"]).removeprefix("#/$defs/")
            return 0 if name in seen or name not in defs else depth(defs[name], (*seen, name))
        types = node.get("type")
        own = 1 if types == "object" or (isinstance(types, list) and "object" in types) else 0
        return own + max((depth(sub, seen) for where, sub in _children(node) if not where.startswith("$defs.")),
                         default=0)

    return depth(schema, ())
