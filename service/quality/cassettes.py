"""Cassettes as readable YAML: JSON bodies stored parsed, so a re-recording diffs line by line."""

from __future__ import annotations

import json
from typing import Any

import yaml

# Headers that only describe one recording and would churn every diff.
_VOLATILE = {
    "date",
    "x-request-id",
    "cf-ray",
    "server",
    "openai-processing-ms",
    "x-stainless-retry-count",
    "x-stainless-read-timeout",
    "x-stainless-async",
    "x-stainless-raw-response",
}


class _Dumper(yaml.SafeDumper):
    pass


def _literal(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _literal)


def _parse(part: dict[str, Any], body_key: str) -> None:
    body = part.get(body_key)
    raw = body.get("string") if isinstance(body, dict) else body
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="strict")
    if isinstance(raw, str) and raw[:1] in "{[":
        try:
            part["parsed_body"] = json.loads(raw)
        except ValueError:
            return
        del part[body_key]


def _unparse(part: dict[str, Any], body_key: str, wrap: bool) -> None:
    if "parsed_body" in part:
        text = json.dumps(part.pop("parsed_body"))
        part[body_key] = {"string": text} if wrap else text


def serialize(cassette: dict[str, Any]) -> str:
    for interaction in cassette.get("interactions", []):
        for side in ("request", "response"):
            headers = interaction[side].get("headers", {})
            for name in list(headers):
                if name.lower() in _VOLATILE:
                    del headers[name]
        _parse(interaction["request"], "body")
        _parse(interaction["response"], "body")
    return yaml.dump(cassette, Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=120)


def deserialize(text: str) -> dict[str, Any]:
    cassette: dict[str, Any] = yaml.safe_load(text)
    for interaction in cassette.get("interactions", []):
        _unparse(interaction["request"], "body", wrap=False)
        _unparse(interaction["response"], "body", wrap=True)
    return cassette
