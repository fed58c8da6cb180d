"""Byte-compile the running environment's packages on every core, once per set of requirements.

    python scripts/compile_env.py KEY

The nox sessions install with ``pip --no-compile`` (pip compiles in one process: about 30 s for
torch and the extras of ``tests`` on two cores) and then run this. ``KEY`` names what was
installed (the noxfile passes a hash of the torch pin, the extras and ``pyproject.toml``); it is
kept in ``.compiled`` in the environment, and a later run with the same key compiles nothing.
Files that do not compile are skipped, as pip skips them (torch ships modules for newer Pythons).
"""

from __future__ import annotations

import compileall
import sys
import sysconfig
from pathlib import Path


def main(key: str, workers: int = 0) -> None:
    """Compile unless ``key`` is the last key compiled for (``workers``: processes, 0 = a core
    each)."""
    stamp = Path(sys.prefix, ".compiled")
    if stamp.exists() and stamp.read_text() == key:
        return
    compileall.compile_dir(sysconfig.get_path("purelib"), quiet=2, workers=workers)
    stamp.write_text(key)


if __name__ == "__main__":
    main(sys.argv[1])
