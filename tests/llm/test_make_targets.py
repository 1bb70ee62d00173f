"""The first hour: `make test` brings what it needs, `make run` installs only what running needs and says
what takes long. Read from the Makefile as make itself expands it (`make -n`, which runs nothing)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None,
                                reason="these tests run the Makefile's targets, and GNU make is not installed")


def dry_run(target: str, tmp_path: Path) -> str:
    """What `make TARGET` would run in a fresh checkout: no venv yet, so every install step shows."""
    venv = tmp_path / "no-venv-yet"
    done = subprocess.run(["make", "-n", "-f", str(ROOT / "Makefile"), "-C", str(ROOT), target, f"VENV={venv}"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_test_installs_the_dev_extra_and_brings_chromium(tmp_path: Path) -> None:
    commands = dry_run("test", tmp_path)
    assert "pip install --disable-pip-version-check --quiet -e '.[dev]'" in commands
    assert "[local]" not in commands  # no compiler run for the tests
    assert "[ ! -x /usr/bin/chromium ]" in commands and "apt-get install -y -qq chromium" in commands
    assert "--record-mode=none --block-network" in commands


def test_make_run_installs_no_dev_tools_and_the_model_server_only_when_it_runs_here(tmp_path: Path) -> None:
    commands = dry_run("run", tmp_path)
    assert re.search(r"pip install --disable-pip-version-check --quiet -e \.\s*$", commands, re.MULTILINE)
    assert "[dev]" not in commands
    assert "-e '.[local]'" in commands
    # the llama-cpp-python install waits behind the check that no endpoint or key is configured
    assert "Settings().uses_local_llm" in commands
    # a line before each slow step, with how long it takes
    assert "about 7 minutes on 2 cores" in commands
    assert "1.1 GB model" in commands and "sha256" in commands


def test_no_install_throws_the_compiled_wheel_away() -> None:
    assert "--no-cache-dir" not in (ROOT / "Makefile").read_text()
    assert not any("--no-cache-dir" in path.read_text() for path in (ROOT / "service" / "llm" / "local").glob("*.py"))


def test_ci_calls_make_test_and_leaves_the_browser_to_it() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    assert "apt-get install" not in ci  # the browser comes with `make test`, for developers too


def test_the_extras_are_split() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    extras = pyproject[pyproject.index("[project.optional-dependencies]"):pyproject.index("[project.scripts]")]
    dev = extras[extras.index("dev = ["):]
    assert "llama-cpp-python" not in dev
    assert re.search(r'^local = \["llama-cpp-python\[server\]', extras, re.MULTILINE)
    assert re.search(r'^otel = \["opentelemetry-sdk', extras, re.MULTILINE)
