"""The embedded model's llama-cpp-python server: started on 127.0.0.1, found again by its pid file, stopped.

The pid file and the server's log live in ``NEWSDIGEST_LOCAL_LLM_DIR`` (under the data directory, one
per checkout); the model file they serve is ``model_file``'s.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from service.errors import ConfigError
from service.llm.local.install import ensure_local_extra
from service.llm.local.model_file import assemble_model, find_model, model_path
from service.llm.local.probe import answers, ours_elsewhere, server_url
from service.llm.local.progress import say
from service.settings import LOCAL_LLM_HOST, Settings

log = structlog.get_logger()


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


def _pid_and_log(settings: Settings) -> tuple[Path, Path]:
    base = settings.local_llm_dir.resolve()
    return base / "server.pid", base / "server.log"


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
    pid_file, log_file = _pid_and_log(settings)
    pid = _read_pid(pid_file)
    if pid is None:
        if answers(settings):
            ours, other_pid = ours_elsewhere(settings)
            if ours:
                log.info("local_llm.reusing", url=server_url(settings), pid=other_pid,
                         note="started by another checkout; its own `local-llm stop` stops it")
                say(f"reusing the embedded model already serving at {server_url(settings)}"
                    + (f" (pid {other_pid}, started by another checkout)" if other_pid else ""))
                return other_pid
            raise ConfigError(f"something already answers on {server_url(settings)} but {pid_file} names no "
                              "running server and it does not list our model; stop it or set "
                              "NEWSDIGEST_LOCAL_LLM_PORT to a free port")
        ensure_local_extra()
        model = find_model(settings) or assemble_model(model_path(settings).parent)
        cmd = server_command(settings, model)
        log.info("local_llm.starting", cmd=cmd, log=str(log_file))
        say(f"starting the embedded model server on {server_url(settings)} (loading takes about a minute; "
            f"log: {log_file})")
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("wb") as out:
            pid = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True).pid
        pid_file.write_text(f"{pid}\n")
    else:
        log.info("local_llm.already_running", pid=pid)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if answers(settings):
            log.info("local_llm.ready", pid=pid, url=server_url(settings))
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
    pid_file, _ = _pid_and_log(settings)
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
    pid_file, _ = _pid_and_log(settings)
    pid = _read_pid(pid_file)
    found = find_model(settings, rehash=verify)
    model = found or model_path(settings)
    url = server_url(settings)
    if pid is not None:
        return LocalLLMStatus(running=answers(settings), pid=pid, url=url, model_path=model,
                              model_ok=found is not None)
    shared, other_pid = ours_elsewhere(settings) if answers(settings) else (False, None)
    return LocalLLMStatus(running=shared, pid=other_pid, url=url, model_path=model,
                          model_ok=found is not None, shared=shared)
