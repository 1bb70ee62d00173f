"""Where a command's result goes: standard output, or the file named by ``--out``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from service.cli.console import err
from service.cli.exit_codes import fail


def check_out_file(out_file: Path | None) -> None:
    """Refuse an --out the result could not be written to, before any model call is paid for."""
    if out_file is None:
        return
    parent = out_file.parent
    if not parent.is_dir():
        raise fail(f"--out {out_file}: directory {parent} does not exist", 2)
    if out_file.is_dir():
        raise fail(f"--out {out_file}: is a directory", 2)
    if not os.access(parent, os.W_OK) or (out_file.exists() and not os.access(out_file, os.W_OK)):
        raise fail(f"--out {out_file}: not writable", 2)


def emit(text: str, out_file: Path | None) -> None:
    if out_file:
        try:
            out_file.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise fail(f"--out {out_file}: cannot write ({exc.strerror})", 2) from None
        err.print(f"wrote {out_file}")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
