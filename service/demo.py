"""``make run``: the service end to end on the example story, ending on the editor's page.

Starts the embedded model when no endpoint is configured, runs ``newsdigest serve`` on a free
port with a fresh API key, sends ``examples/articles/*.json`` (story ``meta-scale-ai``), asks for
the story's digest, prints the page's URL and serves until Ctrl-C. The URL carries the key once
(``?api_key=``): the page answers with a redirect that moves it into an HttpOnly cookie, so it
leaves no trace in the browser's history. The server's own log goes to ``data/demo-serve.log``.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from service.llm import local as local_llm
from service.settings import Settings

STORY = "meta-scale-ai"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "articles"
LOG = Path("data") / "demo-serve.log"
# soft_wrap: a URL broken over two lines cannot be clicked or copied.
console = Console(stderr=True, soft_wrap=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_server(port: int, key: str) -> subprocess.Popen[bytes]:
    LOG.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "NEWSDIGEST_API_KEYS": key}
    command = [sys.executable, "-c", "from service.cli import app; app()", "serve", "--port", str(port)]
    with LOG.open("ab") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_until_up(base: str, server: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"newsdigest serve exited; see {LOG}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"newsdigest serve did not answer within {timeout_s:.0f} s; see {LOG}")


def _checked(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        problem = response.json()
        raise SystemExit(f"{response.request.method} {response.request.url.path}: {problem.get('detail')}")
    body: dict[str, Any] = response.json()
    return body


def _follow(client: httpx.Client, jobs: dict[str, str]) -> bool:
    """Report each job as it finishes (the embedded model takes 15-40 s a call); True if all succeeded."""
    started = time.monotonic()
    pending = dict(jobs)
    succeeded = True
    with console.status("") as status:
        while pending:
            for job_id, label in list(pending.items()):
                job = _checked(client.get(f"/v1/jobs/{job_id}"))
                if job["status"] in ("succeeded", "failed"):
                    ok = job["status"] == "succeeded"
                    succeeded = succeeded and ok
                    mark = "[green]done[/green]" if ok else f"[red]failed[/red]: {job['error']}"
                    console.print(f"  {label}: {mark}")
                    del pending[job_id]
            status.update(f"{len(pending)} job(s) running, {time.monotonic() - started:.0f} s")
            time.sleep(2)
    return succeeded


def run() -> None:
    key = secrets.token_urlsafe(24)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = _start_server(port, key)
    try:
        _wait_until_up(base, server)
        console.print(f"newsdigest serving at {base} (API docs: {base}/docs; log: {LOG})")
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=90) as client:
            jobs = {}
            for path in sorted(EXAMPLES.glob("*.json")):
                accepted = _checked(client.post("/v1/articles", content=path.read_bytes(),
                                                headers={"Content-Type": "application/json"}))
                jobs[accepted["job_id"]] = f"analyse {path.stem}"
            digest = _checked(client.post("/v1/digests", json={"story_id": STORY}))
            jobs[digest["job_id"]] = f"digest of {STORY}"
            console.print(f"sent {len(jobs) - 1} articles and asked for the digest of {STORY}:")
            if not _follow(client, jobs):
                console.print(f"[yellow]Some jobs failed: is the model endpoint answering? See {LOG}.[/yellow]")
        console.print(f"\nThe editor's page (the key in the link is moved into a cookie on first open):\n"
                      f"  {base}/v1/stories/{STORY}/digest?format=html&api_key={key}\n"
                      f"As Markdown: curl -H 'Authorization: Bearer {key}' -H 'Accept: text/markdown' "
                      f"{base}/v1/stories/{STORY}/digest\n\nServing until Ctrl-C.")
        server.wait()
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)


def main() -> None:
    settings = Settings()
    started_model = False
    if settings.uses_local_llm and not local_llm.status(settings).running:
        console.print("No LLM endpoint configured: starting the embedded model (the first time takes minutes)…")
        local_llm.start(settings)
        started_model = True
    try:
        run()
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        if started_model:
            local_llm.stop(settings)


if __name__ == "__main__":
    main()
