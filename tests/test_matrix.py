"""The real-world conformance matrix (issue 13): the verdicts of the adapters for widely used
libraries against their pins (``tests/matrix/``: every clause, each VARIANT, DEVIATES and NOT
PROVIDED with the library source that justifies it), and ``scripts/matrix.py``. What each
adapter maps, and that it maps it truthfully, is tested in ``tests/test_matrix_<adapter>.py``.

The libraries come with the extra ``matrix`` (``pip install -e '.[matrix]'``). Without them these
tests are skipped, except where ``$CI`` is set: there they fail, because CI must run them (the
nox ``tests`` session installs the extra).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import torch._dynamo  # noqa: F401  (imported lazily by torch; pytester must not unload it)

import spec.oracle  # noqa: F401  (imported before pytester snapshots sys.modules)
from spec.adapter import SHIPPED, AdapterError, load_adapter
from spec.clauses import CLAUSES
from spec.diagnosis import KNOWN_BUGS
from tests import docs_data
from tests import matrix as pinned
from tests.suite_run import suite_report

_script = importlib.util.spec_from_file_location(
    "matrix_script", Path(__file__).resolve().parents[1] / "scripts" / "matrix.py")
assert _script is not None and _script.loader is not None
matrix = importlib.util.module_from_spec(_script)
_script.loader.exec_module(matrix)

pytest_plugins = ["pytester"]


def observed(entry: dict[str, Any]) -> tuple[str, str | None]:
    """(verdict, variant names or diagnosed bug) of a report entry, as a pin has them."""
    if entry["verdict"] == "DEVIATES":
        return entry["verdict"], (entry["diagnosis"] or "").split(":")[0] or None
    return entry["verdict"], entry["variant"]


@pytest.mark.slow
@pytest.mark.parametrize("impl", pinned.LIBRARIES)
def test_verdicts_are_the_pinned_ones(pytester: pytest.Pytester, impl: str) -> None:
    """Every clause's verdict on the library is its pin (CONFORMS where none is pinned). One
    suite run per library; the failure lists every clause that differs, with the suite's reason
    and the pin's justification."""
    pinned.need(impl)
    report = suite_report(pytester, impl, ["spec.suite"])
    docs_data.keep_report(impl, pytester.path / "report.json")
    pins = pinned.pins(impl)
    assert set(report) == set(CLAUSES)
    wrong = []
    for clause, entry in report.items():
        verdict, qualifier, why = pins.get(clause, ("CONFORMS", None, ""))
        if observed(entry) != (verdict, qualifier):
            wrong.append(f"{clause}: got {observed(entry)}, pinned {(verdict, qualifier)}\n"
                         f"  suite: {entry['reason']}\n  pin: {why}")
    assert not wrong, f"{impl}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("impl", pinned.LIBRARIES)
def test_pins_are_justified(impl: str) -> None:
    """The pins name registered clauses, variants and bugs; each one points at a library source
    file and a function in it (``path.py, Class.function``); the library is described."""
    assert pinned.module(impl).ABOUT
    for cid, (verdict, qualifier, why) in pinned.pins(impl).items():
        clause = CLAUSES[cid]
        assert verdict in ("VARIANT", "DEVIATES", "NOT PROVIDED"), cid
        assert re.search(r"[\w/]+\.py, [\w.]+", why), f"{cid}: no 'file.py, function' in {why!r}"
        if verdict == "VARIANT":
            for name in (qualifier or "").split(", "):
                clause.variant(name)  # KeyError unless registered
        if verdict == "DEVIATES" and qualifier:
            assert qualifier in KNOWN_BUGS, cid
        if verdict == "NOT PROVIDED":
            assert qualifier is None, cid


@pytest.mark.parametrize("impl", pinned.LIBRARIES)
def test_missing_library_names_the_extra(monkeypatch: pytest.MonkeyPatch, impl: str) -> None:
    """Without its library, loading the adapter fails with one line naming the extra."""
    monkeypatch.setitem(sys.modules, pinned.module(impl).REQUIRES, None)  # its import fails
    monkeypatch.delitem(sys.modules, SHIPPED[impl].partition(":")[0], raising=False)
    with pytest.raises(AdapterError) as info:
        load_adapter(impl)
    message = str(info.value)
    assert "\n" not in message
    assert f"{impl} needs the optional extra: pip install 'attention-spec[matrix]'" in message


# -- scripts/matrix.py ------------------------------------------------------------------------


def _report(tmp_path: Path, name: str, clauses: list[dict[str, Any]]) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"format": "attention-spec-report/1", "implementation": name,
                                "environment": {}, "summary": {}, "clauses": clauses}))
    return path


def test_matrix_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One row per clause in paper order, one column per report in the order given, cells
    with the variant names or the diagnosed bug, each report's totals; Markdown too; exit 2 for
    a file that is not a report."""
    a = _report(tmp_path, "lib-a", [
        {"id": "3.2.2/eq", "verdict": "VARIANT", "variant": "projection-biases"},
        {"id": "5.4/label-smoothing", "verdict": "DEVIATES", "variant": None,
         "diagnosis": "no-label-smoothing: the loss is plain cross-entropy (eps_ls = 0)"},
    ])
    b = _report(tmp_path, "lib-b", [{"id": "3.2.2/eq", "verdict": "CONFORMS", "variant": None}])
    md = tmp_path / "out" / "matrix.md"
    assert matrix.main([str(a), str(b), "--markdown", str(md)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["clause", "lib-a", "lib-b"]
    row = next(line for line in lines if line.startswith("3.2.2/eq"))
    assert row.split() == ["3.2.2/eq", "variant:", "projection-biases", "conforms"]
    row = next(line for line in lines if line.startswith("5.4/label-smoothing"))
    assert row.split() == ["5.4/label-smoothing", "DEVIATES:", "no-label-smoothing", "-"]
    ids = [line.split()[0] for line in lines if line.split() and line.split()[0] in CLAUSES]
    assert ids == list(CLAUSES)
    assert "lib-a: 1 variant, 1 DEVIATES" in lines and "lib-b: 1 conforms" in lines
    text = md.read_text()
    assert "| `3.2.2/eq` | variant: projection-biases | conforms |" in text
    assert "| **summary** | 1 variant, 1 DEVIATES | 1 conforms |" in text
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert matrix.main([str(a), str(bad)]) == 2
