"""``python -m tests.mutants [--full] [pytest options]``: run the corpora and write the detection
table to ``build/docs-data/detection.json`` (or to ``$ATTENTION_SPEC_DETECTION_JSON``).

It runs ``tests/test_mutants.py`` and ``tests/test_outside.py`` with the table's path set, after removing an earlier table, so
that every row comes from this run. ``--full`` runs the whole suite against broken mutants too
(a verdict for every clause; slower). Other options go to pytest (for example ``-n 4``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.mutants.detection import DEFAULT_PATH, DETECTION_ENV, FULL_ENV


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--full" in args:
        args.remove("--full")
        os.environ[FULL_ENV] = "1"
    root = Path(__file__).resolve().parents[2]
    path = Path(os.environ.get(DETECTION_ENV) or root / DEFAULT_PATH).resolve()
    os.environ[DETECTION_ENV] = str(path)
    path.unlink(missing_ok=True)
    tests = [str(root / "tests" / name) for name in ("test_mutants.py", "test_outside.py")]
    code = int(pytest.main([*tests, "-p", "no:cacheprovider", "-q", *args]))
    print(f"detection table written to {path}" if path.exists() else "no table written")
    return code


if __name__ == "__main__":
    sys.exit(main())
