"""The `newsdigest` command: recorded runs and one-line errors with exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import vcr
from typer.testing import CliRunner

from service.cli import app
from service.pipeline.text import prepare
from service.quality import cassettes as json_body_serializer
from tests.conftest import RECORDING_BASE_URL, ROOT, SECRET_HEADERS
from tests.factories import example

OBSERVER = ROOT / "examples" / "articles" / "observer-wang-joins-meta.json"
runner = CliRunner()


@pytest.fixture
def recorded_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """The endpoint and options the pipeline cassettes were recorded with."""
    monkeypatch.setenv("NEWSDIGEST_LLM_BASE_URL", RECORDING_BASE_URL)
    monkeypatch.setenv("NEWSDIGEST_LLM_MODE", "json_object")
    monkeypatch.setenv("NEWSDIGEST_LLM_MODEL", "qwen2.5-coder-1.5b-instruct-q4")


def replay_pipeline_cassette(name: str) -> vcr.cassette.CassetteContextDecorator:
    recorder = vcr.VCR(
        cassette_library_dir=str(ROOT / "cassettes" / "test_pipeline"),
        record_mode="none",
        match_on=["method", "path", "body"],
        filter_headers=SECRET_HEADERS,
    )
    recorder.register_serializer("yaml", json_body_serializer)
    return recorder.use_cassette(name, serializer="yaml")


def test_analyze_prints_each_fact_with_the_articles_exact_sentences(recorded_endpoint: None) -> None:
    with replay_pipeline_cassette("test_analyze_example[observer].yaml") as cassette:
        result = runner.invoke(app, ["analyze", "--format", "json", str(OBSERVER)])
    assert result.exit_code == 0, result.output
    assert cassette.all_played
    extraction = json.loads(result.stdout)
    sentences = {s.n: s.text for s in prepare(example("observer"), max_chars=60_000).sentences}
    assert extraction["facts"]
    for fact in extraction["facts"]:
        for citation in fact["citations"]:
            assert citation["quote"] == sentences[citation["sentence"]]
    assert extraction["provenance"]["key_facts"]["prompt"].startswith("key_facts@")


def test_analyze_markdown_quotes_the_sentences(recorded_endpoint: None) -> None:
    with replay_pipeline_cassette("test_analyze_example[observer].yaml"):
        result = runner.invoke(app, ["analyze", str(OBSERVER)])
    assert result.exit_code == 0, result.output
    sentences = {s.text for s in prepare(example("observer"), max_chars=60_000).sentences}
    assert any(sentence in result.stdout for sentence in sentences)


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        (b"", ".txt", "no readable sentence"),
        (b"Title\n   \n\t\n", ".txt", "no readable sentence"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00", ".txt", "binary file"),
        (b"Caf\xe9 au lait", ".txt", "not UTF-8 text"),
        (b"<html><body><script>alert(1)</script></body></html>", ".html", "no readable sentence"),
        (b'{"outlet": ""}', ".json", "invalid article"),
        (b"hello", ".pdf", "unsupported file type"),
    ],
)
def test_bad_articles_exit_2_with_one_line(
    tmp_path: Path, recorded_endpoint: None, content: bytes, suffix: str, message: str
) -> None:
    path = tmp_path / f"article{suffix}"
    path.write_bytes(content)
    result = runner.invoke(app, ["analyze", str(path)])
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_oversized_article_exits_2(tmp_path: Path, recorded_endpoint: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSDIGEST_MAX_ARTICLE_CHARS", "100")
    path = tmp_path / "long.txt"
    path.write_text("Title\n" + "A sentence. " * 50)
    result = runner.invoke(app, ["analyze", str(path)])
    assert result.exit_code == 2
    assert "the limit is 100" in result.stderr


def test_unknown_prompt_version_exits_4(recorded_endpoint: None) -> None:
    result = runner.invoke(app, ["analyze", "--prompt", "key_facts@99", str(OBSERVER)])
    assert result.exit_code == 4
    assert "unknown prompt key_facts@99" in result.stderr


def test_unreachable_endpoint_exits_3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSDIGEST_LLM_BASE_URL", "http://127.0.0.1:9/v1")  # discard port: nothing listens
    monkeypatch.setenv("NEWSDIGEST_LLM_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("NEWSDIGEST_LLM_RETRY_INITIAL_WAIT_S", "0")
    result = runner.invoke(app, ["analyze", str(OBSERVER)])
    assert result.exit_code == 3
    assert "cannot reach the model endpoint" in result.stderr


def test_prompts_check_and_list() -> None:
    check = runner.invoke(app, ["prompts", "check"])
    assert check.exit_code == 0 and "prompts match prompts.lock" in check.stdout
    listing = runner.invoke(app, ["prompts", "list"])
    assert "key_facts" in listing.stdout and "digest" in listing.stdout
