"""The pipeline's layer: its modules load none of the service's I/O (model client, database, web, metrics, settings).

Each module of ``service/pipeline/`` is imported in a fresh interpreter, so what another test already
imported cannot hide an import chain; the failure names the modules that came in and, for the first,
the chain of imports that brought it.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import service.pipeline

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = Path(service.pipeline.__file__).parent
MODULES = ["service.pipeline", *(f"service.pipeline.{m.name}" for m in pkgutil.iter_modules([str(PIPELINE)]))]
FORBIDDEN = ("openai", "sqlalchemy", "fastapi", "tenacity", "prometheus_client", "service.settings")
#: What a pipeline module may import of the service: the errors, the prompts, the model port, and itself.
ALLOWED_SERVICE = ("service.errors", "service.prompts", "service.llm.port", "service.pipeline")

# Imports ``module`` and prints the forbidden modules it loaded, with the import chain of each: an
# import hook records which module was being executed when another one was first imported.
_PROBE = """
import builtins, json, sys
forbidden = {forbidden!r}
parent, stack = {{}}, []
real_import = builtins.__import__

def traced(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {{}}).get("__name__", "?")
    before = set(sys.modules)
    result = real_import(name, globals, locals, fromlist, level)
    for new in set(sys.modules) - before:
        parent.setdefault(new, importer)
    return result

builtins.__import__ = traced
import importlib
importlib.import_module({module!r})

def chain(name):
    links = [name]
    while links[-1] in parent and parent[links[-1]] not in links and len(links) < 30:
        links.append(parent[links[-1]])
    return " <- ".join(links)

loaded = sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in forbidden))
tops = [m for m in loaded if not any(m.startswith(o + ".") for o in loaded)]
print(json.dumps({{"loaded": tops, "chains": [chain(m) for m in tops]}}))
"""


def test_every_pipeline_module_is_checked() -> None:
    assert {"service.pipeline.digest", "service.pipeline.extract", "service.pipeline.story",
            "service.pipeline.align", "service.pipeline.reask", "service.pipeline.disagree"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_a_pipeline_module_loads_no_io_layer(module: str) -> None:
    probe = _PROBE.format(forbidden=FORBIDDEN, module=module)
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["loaded"] == [], f"{module} loads {found['loaded']}:\n" + "\n".join(found["chains"])


@pytest.mark.parametrize("module", MODULES)
def test_a_pipeline_module_imports_of_the_service_only_its_port_errors_and_prompts(module: str) -> None:
    path = PIPELINE / ("__init__.py" if module == "service.pipeline" else f"{module.rsplit('.', 1)[1]}.py")
    imported = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.append(node.module)
        elif isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
    wrong = [name for name in imported if (name == "service" or name.startswith("service."))
             and not any(name == ok or name.startswith(ok + ".") for ok in ALLOWED_SERVICE)]
    assert wrong == []


def test_the_probe_sees_a_forbidden_import() -> None:
    """The check itself: a module known to load the settings is reported, with its chain."""
    probe = _PROBE.format(forbidden=FORBIDDEN, module="service.llm.factory")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)

    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert "service.settings" in found["loaded"] and "openai" in found["loaded"]
    assert any(c.startswith("service.settings <- ") for c in found["chains"])
