"""The test session hands its results to the documentation build.

The site shows the suite's report on every implementation of ``sitedata.IMPLEMENTATIONS`` and
the corpora's detection table. The test session makes the same results, in-process: the suite
against each implementation (``tests/test_conformance_results.py``, ``tests/test_matrix.py``)
and the corpora (``tests/test_mutants.py``, ``tests/test_outside.py``). It keeps them under
``build/docs-data/``, stamped with the key of the sources as they were when the session began,
so that a later ``mkdocs build`` (``tests/test_docs_browser.py`` runs after the session in the
nox ``tests`` session) reuses them instead of running everything again. A result is kept only
when it is whole: a complete report, a detection table with every row.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tests.mutants import detection

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "_gen"))

import sitedata

KEYS_ENV = "ATTENTION_SPEC_DOCS_KEYS"
"""The keys of the sources at the session's start (JSON), for the xdist workers."""

SESSION_TABLE = sitedata.DATA_DIR / "detection.session.json"
"""Where the session's corpus tests write their rows (the table is kept when it is whole)."""


def start() -> None:
    """At the session's start (in the controller, before the workers start): note the keys,
    and have the corpus tests write their rows to a fresh :data:`SESSION_TABLE` (unless a
    table is already asked for, as ``python -m tests.mutants`` does)."""
    os.environ[KEYS_ENV] = json.dumps(
        {"reports": sitedata.reports_key(), "detection": sitedata.detection_key()}
    )
    if detection.DETECTION_ENV not in os.environ and not detection.full_runs():
        SESSION_TABLE.unlink(missing_ok=True)
        os.environ[detection.DETECTION_ENV] = str(SESSION_TABLE)


def keep_report(impl: str, report: Path) -> None:
    """Keep the whole suite's report on ``impl`` for the docs (in a session begun by
    :func:`start`)."""
    keys = os.environ.get(KEYS_ENV)
    text = report.read_text()
    if keys and impl in sitedata.IMPLEMENTATIONS and json.loads(text).get("complete") is True:
        sitedata.keep(sitedata.report_path(impl), text, json.loads(keys)["reports"])


def finish() -> None:
    """At the session's end (in the controller): keep the session's detection table if it is
    whole."""
    keys = os.environ.get(KEYS_ENV)
    if not keys or os.environ.get(detection.DETECTION_ENV) != str(SESSION_TABLE):
        return
    if detection.complete(SESSION_TABLE):
        sitedata.keep(sitedata.DETECTION_JSON, SESSION_TABLE.read_text(),
                      json.loads(keys)["detection"])
    SESSION_TABLE.unlink(missing_ok=True)
    Path(f"{SESSION_TABLE}.lock").unlink(missing_ok=True)  # detection.record's
