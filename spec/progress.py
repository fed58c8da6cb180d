"""What a run has done so far, written as it goes, so that a run cut short still says where.

When ``$ATTENTION_SPEC_PROGRESS`` names a file (``python -m spec`` sets it, see
:mod:`spec.cli`), every process of the run (the pytest process, or each pytest-xdist worker)
appends one JSON line per event: ``start`` when a clause test starts, ``outcome`` when it has a
verdict, ``finish`` when it ends, and ``done`` when the report is written. Lines are appended
with one ``write`` each (``O_APPEND``), so that processes do not interleave them.

This module imports neither torch nor hypothesis: the supervisor reads the file without them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["ENV_VAR", "RESUME_VAR", "read", "record"]

ENV_VAR = "ATTENTION_SPEC_PROGRESS"
"""Names the progress file (set by the supervisor for its child)."""

RESUME_VAR = "ATTENTION_SPEC_RESUME"
"""Names a JSON file ``{"outcomes": [...], "done": [node ids]}`` from the supervisor: a run
resumed after a crash reports the earlier attempts' outcomes and does not run their tests
again."""


def record(event: str, path: str | None = None, **fields: Any) -> None:
    """Append ``{"event": event, "pid": ..., "time": ..., **fields}`` to the progress file
    (``path``, or the one ``$ATTENTION_SPEC_PROGRESS`` names)."""
    path = path or os.environ.get(ENV_VAR)
    if not path:
        return
    line = json.dumps({"event": event, "pid": os.getpid(), "time": time.time(), **fields})
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The events recorded so far (a last line cut short by a crash is left out)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events
