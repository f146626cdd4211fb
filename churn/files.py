"""Files written whole or not at all."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: Path, write: Callable[..., object], **kwargs: object) -> None:
    """Write through a temporary name, so that a reader never sees a half-written file.

    A write that fails (a full disk) leaves neither the file nor its partial copy behind.
    """
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        write(partial, **kwargs)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
