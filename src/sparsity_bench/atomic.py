"""Files written whole or not at all: a crash mid-write leaves the previous file in place."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path` to write; it replaces `path` (one rename) when the block ends without error."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    yield tmp
    tmp.replace(path)
