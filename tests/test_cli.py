"""The `newsdigest` command: recorded runs and one-line errors with exit codes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from service.cli import app
from service.pipeline.text import prepare
from service.quality.report import recording
from tests.conftest import RECORDING_BASE_URL, ROOT
from tests.factories import analysis, article, digest_answer, example, facts_answer
from tests.fake_openai import FaultServer
from tests.processes import free_port

OBSERVER = ROOT / "examples" / "articles" / "observer-wang-joins-meta.json"
runner = CliRunner()


@pytest.fixture
def recorded_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """The endpoint and options the pipeline cassettes were recorded with."""
    monkeypatch.setenv("NEWSDIGEST_LLM_BASE_URL", RECORDING_BASE_URL)
    monkeypatch.setenv("NEWSDIGEST_LLM_MODE", "json_object")
    monkeypatch.setenv("NEWSDIGEST_LLM_MODEL", "qwen2.5-coder-1.5b-instruct-q4")
    monkeypatch.setenv("NEWSDIGEST_LLM_CONTEXT_TOKENS", "8192")


def replay_example_story() -> Any:
    """The example story as the embedded model answered it (the gold story's recording)."""
    return recording(ROOT / "cassettes", "meta-scale-ai")


def test_analyze_prints_each_fact_with_the_articles_exact_sentences(recorded_endpoint: None) -> None:
    with replay_example_story() as cassette:
        result = runner.invoke(app, ["analyze", "--format", "json", str(OBSERVER)])
    assert result.exit_code == 0, result.output
    assert cassette.play_count == 2  # its key facts and its sentiment, each answered once
    extraction = json.loads(result.stdout)
    sentences = {s.n: s.text for s in prepare(example("observer"), max_chars=60_000).sentences}
    assert extraction["facts"]
    for fact in extraction["facts"]:
        for citation in fact["citations"]:
            assert citation["quote"] == sentences[citation["sentence"]]
    assert extraction["provenance"]["key_facts"]["prompt"].startswith("key_facts@")


def test_analyze_markdown_quotes_the_sentences(recorded_endpoint: None) -> None:
    with replay_example_story():
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
        (b'{"outlet": ""}', ".json", "invalid article: outlet: String should have at least 1 character"),
        (b"", ".json", "not valid JSON at line 1, column 1: Expecting value"),
        (b'{"outlet": "x",', ".json", "not valid JSON at line 1, column 16"),
        (b"[1, 2]", ".json", "invalid article: Input should be an object"),
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
    assert result.stderr.startswith(f"error: {path}: ")  # every input error names the file
    assert ": : " not in result.stderr


def test_oversized_article_exits_2(tmp_path: Path, recorded_endpoint: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSDIGEST_MAX_ARTICLE_CHARS", "100")
    path = tmp_path / "long.txt"
    path.write_text("Title\n" + "A sentence. " * 50)
    result = runner.invoke(app, ["analyze", str(path)])
    assert result.exit_code == 2
    assert "the limit is 100" in result.stderr
    assert result.stderr.startswith(f"error: {path}: ")


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
    # Retries are logged as they happen; the error itself is one line, the last.
    last = result.stderr.strip().splitlines()[-1]
    assert last == "error: cannot reach the model endpoint http://127.0.0.1:9/v1 (ConnectError)"
    assert sum(line.startswith("error:") for line in result.stderr.splitlines()) == 1


def test_prompts_check_and_list() -> None:
    check = runner.invoke(app, ["prompts", "check"])
    assert check.exit_code == 0 and "prompts match prompts.lock" in check.stdout
    listing = runner.invoke(app, ["prompts", "list"])
    assert "key_facts" in listing.stdout and "digest" in listing.stdout


# --- one-line errors, stdin, --version, --model, --out (the fault server plays the model) -----------------


@pytest.fixture
def fault_endpoint(fault_server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> FaultServer:
    monkeypatch.setenv("NEWSDIGEST_LLM_BASE_URL", fault_server.base_url)
    monkeypatch.setenv("NEWSDIGEST_LLM_MODE", "json_object")
    monkeypatch.setenv("NEWSDIGEST_LLM_RETRY_INITIAL_WAIT_S", "0")
    return fault_server


def test_bad_settings_exit_4_with_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSDIGEST_PROMPT_VERSIONS", "key_facts")
    result = runner.invoke(app, ["analyze", str(OBSERVER)])
    assert result.exit_code == 4
    assert result.stderr.strip() == ("error: invalid settings: NEWSDIGEST_PROMPT_VERSIONS: expected name@version "
                                     "pairs like key_facts@2,sentiment@1, got 'key_facts'")
    assert "unpack" not in result.stderr


def test_digest_refuses_an_out_file_in_a_missing_directory_before_any_model_call(
    tmp_path: Path, fault_endpoint: FaultServer
) -> None:
    target = tmp_path / "missing_dir" / "x.html"
    result = runner.invoke(app, ["digest", str(OBSERVER), "--format", "html", "--out", str(target)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: --out {target}: directory {target.parent} does not exist"
    assert fault_endpoint.completions == []


def test_stdin_is_read_as_one_article(fault_endpoint: FaultServer) -> None:
    payload = article(1)
    fault_endpoint.script(analysis(payload))
    result = runner.invoke(app, ["analyze", "--format", "json", "-"], input=json.dumps(payload))
    assert result.exit_code == 0, result.stderr
    extraction = json.loads(result.stdout)
    assert extraction["article"]["outlet"] == payload["outlet"]
    assert [f["claim"] for f in extraction["facts"]] == [f["claim"] for f in facts_answer(payload)["facts"]]


@pytest.mark.parametrize(("text", "message"), [
    ("Title only\n  \n", "<stdin>: article has no readable sentence"),
    ("{broken", "<stdin>: not valid JSON at line 1, column 2"),
])
def test_stdin_errors_name_stdin(text: str, message: str, fault_endpoint: FaultServer) -> None:
    result = runner.invoke(app, ["analyze", "-"], input=text)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_stdin_can_be_given_once(fault_endpoint: FaultServer) -> None:
    result = runner.invoke(app, ["analyze", "-", "-"], input="Title\nA sentence.")
    assert result.exit_code == 2 and "can be given once" in result.stderr


def test_model_option_overrides_the_setting(fault_endpoint: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSDIGEST_LLM_MODEL", "from-the-environment")
    payload = article(2)
    fault_endpoint.script(analysis(payload))
    result = runner.invoke(app, ["analyze", "--model", "llama3.1:8b", "-"], input=json.dumps(payload))
    assert result.exit_code == 0, result.stderr
    assert {r.json["model"] for r in fault_endpoint.completions} == {"llama3.1:8b"}


def test_version_and_help() -> None:
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout.startswith("newsdigest ")
    for command in ("analyze", "digest"):
        shown = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).stdout
        assert "--model" in shown and "--format" in shown
        assert "readable Markdown" in shown or "the editor's page" in shown
        assert "standard input" in shown


def test_worker_serves_prometheus_metrics_on_its_own_port(tmp_path: Path) -> None:
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("NEWSDIGEST_", "OPENAI_"))},
           "NEWSDIGEST_DATA_DIR": str(tmp_path / "data"), "NEWSDIGEST_WORKER_METRICS_PORT": str(port),
           "NEWSDIGEST_LLM_BASE_URL": "http://127.0.0.1:9/v1", "NEWSDIGEST_MIGRATE_ON_START": "true"}
    command = [sys.executable, "-c", "from service.cli import app; app()", "worker"]
    log = tmp_path / "worker.log"
    with log.open("wb") as stderr:
        worker = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline, body = time.monotonic() + 30, ""
        while time.monotonic() < deadline and worker.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                    body = response.read().decode()
                if "newsdigest_job_queue_depth" in body:
                    break
            except OSError:
                time.sleep(0.2)
        assert "newsdigest_job_queue_depth" in body, log.read_text()
        assert "newsdigest_llm_calls_total" in body
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    assert worker.returncode == 0, log.read_text()
    assert f"http://127.0.0.1:{port}/metrics" in log.read_text()  # the worker says where its metrics are


def test_worker_metrics_port_0_turns_them_off() -> None:
    from service.jobs.runtime import metrics_endpoint
    from service.settings import Settings

    with metrics_endpoint(Settings(worker_metrics_port=0)) as port:
        assert port is None
    taken = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        with metrics_endpoint(Settings(worker_metrics_port=taken)) as port:
            assert port is None  # taken by another worker on this host: runs on without, and says so


def test_digest_names_each_file_it_leaves_out(tmp_path: Path, fault_endpoint: FaultServer) -> None:
    payload = article(3)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(payload))
    empty = tmp_path / "empty.txt"
    empty.write_text("Title\n   \n")
    fault_endpoint.script([*analysis(payload), digest_answer([payload])])
    result = runner.invoke(app, ["digest", "--format", "json", str(good), str(empty)])
    assert result.exit_code == 0, result.stderr
    assert f"warning: {empty}: article has no readable sentence" in result.stderr
    assert json.loads(result.stdout)["statements"]
