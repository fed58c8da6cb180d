"""The data the documentation site is generated from (docs/_gen): clauses, tests, code, links."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "_gen"))

import sitedata as S


def test_every_clause_has_a_unique_anchor_and_heading() -> None:
    anchors = {S.anchor(cid) for cid in S.CLAUSES}
    assert len(anchors) == len(S.CLAUSES)
    assert S.anchor("3.2.1/eq1") == "clause-3.2.1-eq1"
    for _section, _title, clauses in S.sections_in_order():
        headings = [S.heading_id(c.id) for c in clauses]
        assert len(set(headings)) == len(headings)


def test_clause_ids_are_found_in_text_but_not_in_quotes() -> None:
    text = 'Implements: 3.2.1/eq1, 3.2.2/eq (and "3.2.1/scale"); 9.9/unknown, practice/padding.'
    assert S.clause_ids_in(text) == ["3.2.1/eq1", "3.2.2/eq", "practice/padding"]


def test_every_suite_test_names_a_registered_clause() -> None:
    tests = S.tests_by_clause()
    assert set(tests) == set(S.CLAUSES)
    found = [t for refs in tests.values() for t in refs]
    assert found, "no test of the suite was found"
    for t in found:
        assert t.module.startswith("spec.suite.test_") and t.name.startswith("test_")
    assert any(t.name == "test_eq1" for t in tests["3.2.1/eq1"])


def test_reference_code_is_found_from_docstrings() -> None:
    code = S.code_by_clause()
    paths = {cid: [c.path for c in refs] for cid, refs in code.items()}
    assert "transformer.attention.scaled_dot_product_attention" in paths["3.2.1/eq1"]  # Eq. 1
    assert "transformer.attention.MultiHeadAttention" in paths["3.2.2/heads-split-by-projection"]
    assert "transformer.training.noam_rate" in paths["5.3/eq3"]
    objects = {o.path for o in S.reference_objects()}
    assert all(p in objects for refs in paths.values() for p in refs)


def test_markdown_text_is_escaped_but_code_stays_code() -> None:
    assert S.md_text("a_b * [c] <d>") == r"a\_b \* \[c\] &lt;d&gt;"
    assert S.md_text("use `d_k` here") == r"use `d_k` here"
    assert S.md_text("one ` tick") == r"one \` tick"


def test_docstring_clause_ids_become_links_outside_code() -> None:
    pytest.importorskip("griffe")
    from griffe_clauses import link_clause_ids

    text = "Implements: 3.2.1/eq1.\n\nSee ``3.2.1/mask`` and::\n\n    mark(3.2.1/scale)\n\nthen 3.3/eq2."
    linked = link_clause_ids(text)
    assert "[3.2.1/eq1][clause-3.2.1-eq1]" in linked
    assert "``3.2.1/mask``" in linked
    assert "    mark(3.2.1/scale)" in linked
    assert "[3.3/eq2][clause-3.3-eq2]" in linked


def test_every_paper_clause_links_its_section_of_the_paper() -> None:
    """Each section the suite checks links its place in arXiv 1706.03762 (HTML anchor and PDF
    page); only the practice clauses, which the paper does not state, have none."""
    for cid, clause in S.CLAUSES.items():
        link = S.paper_link(clause.section)
        if clause.group == "paper":
            assert link is not None, cid
            assert "https://ar5iv.labs.arxiv.org/html/1706.03762#S" in link
            assert "(https://arxiv.org/abs/1706.03762), page " in link
        else:
            assert link is None, cid


def test_the_architecture_drawing_links_every_box_to_its_clause() -> None:
    import architecture

    drawing = architecture.svg("../", {"3.2.1/eq1": "DEVIATES"}, "x")
    for cid in architecture.clauses():
        assert cid in S.CLAUSES
        assert f'href="{architecture.href(cid, "../")}"' in drawing
    assert architecture.href("3.2.1/eq1", "../") == "../clauses/3.2.1/#eq1"
    assert architecture.COLOURS["DEVIATES"] in drawing  # coloured by the verdict
    assert "<script" not in drawing


# -- the adapter protocol page (docs/_gen/protocol.py) ---------------------------------------------
def _python_files(*packages: str) -> list[Path]:
    return [p for package in packages for p in sorted((S.ROOT / package).rglob("*.py"))]


def test_every_method_the_suite_asks_for_is_in_the_registry() -> None:
    """The registry the protocol page is made from cannot fall behind the suite: every name
    passed as a literal to ``require`` / ``has`` / ``capability`` in ``spec/``, every method
    the guard and the declared architectures know, and every method of the reference's
    adapter (which implements the protocol) is a :data:`spec.adapter.METHODS` entry."""
    import ast

    from spec import guard
    from spec.adapter import ATTENTION_CAPABILITIES, DECODER_CAPABILITIES, METHODS
    from spec.adapters.reference import ReferenceAdapter

    asked: dict[str, str] = {}
    for path in _python_files("spec"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            index = {"require": 0, "has": 0, "capability": 1}.get(called)
            if index is None or len(node.args) <= index:
                continue
            arg = node.args[index]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                asked.setdefault(arg.value, f"{path.relative_to(S.ROOT)}:{node.lineno}")
    assert len(asked) >= 20, sorted(asked)  # the scan finds the suite's calls
    assert {n: where for n, where in asked.items() if n not in METHODS} == {}
    known = (set(guard.TENSOR_OUTPUTS) | set(guard.RETURNS) | DECODER_CAPABILITIES
             | ATTENTION_CAPABILITIES)
    assert known - set(METHODS) == set()
    reference = {name for name, value in vars(ReferenceAdapter).items()
                 if callable(value) and not name.startswith("_")}
    assert len(reference) >= 20 and reference - set(METHODS) == set()


def test_the_clauses_that_use_a_method_are_read_from_the_suite() -> None:
    """Every method is used by some clause; names passed as literals, through loops over names
    and through helpers all count; a string that is not passed to ``require`` / ``has`` (the
    dropout site ``"attention"`` of 5.4) does not."""
    import protocol

    from spec.adapter import METHODS

    uses = protocol.clauses_using()
    assert set(uses) == set(METHODS)
    assert {name for name, cids in uses.items() if not cids} == set()
    assert all(cid in S.CLAUSES for cids in uses.values() for cid in cids)
    assert uses["attention_weights"] == ["3.2.1/softmax-over-keys"]
    assert uses["attention"] == [cid for cid in S.CLAUSES if cid.startswith("3.2.1/")]
    assert "practice/incremental-decoding" in uses["decode_incremental"]
    assert "3.5/added" in uses["embed_target"]  # a loop over names, passed on to a helper
    assert "3.1/shared-memory" in uses["forward"]  # clause.has("forward"), then a helper
    assert "3.1/encoder-stack" in uses["model"]  # through H.build_stacks -> build


def test_the_protocol_page_has_a_section_per_method_and_the_names_table() -> None:
    import protocol

    from spec.adapter import ATTRIBUTES, METHODS

    clauses = {name: ["3.2.1/eq1"] for name in METHODS}
    page = protocol.page(clauses)
    for name, method in METHODS.items():
        assert page.count(f"{{ #method-{name} }}") == 1, name
        assert f"(#method-{name})" in page  # the table of methods links the section
        assert f"adapter.{method.signature}" in page
    for name in ATTRIBUTES:
        assert f"| `{name}` |" in page
    assert "| name | shape | paper |\n|---|---|---|\n" in page  # a Markdown table
    assert "[3.2.1/eq1][clause-3.2.1-eq1]" in page
    assert "NOT PROVIDED, \"the adapter does not provide `greedy`: why\"" in page
    assert "=====" not in page


def test_no_docstring_holds_an_rst_table() -> None:
    """mkdocstrings renders Markdown: an RST table (rows of ``=====``) shows as text."""
    import ast
    import re

    rule = re.compile(r"^\s*=+(\s+=+)*\s*$", re.M)
    found = []
    for path in _python_files("spec", "transformer"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                 ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node) or ""
                if rule.search(doc):
                    found.append(f"{path.relative_to(S.ROOT)}:{getattr(node, 'lineno', 1)}")
    assert found == []


def test_the_canonical_names_table_is_what_the_reference_returns() -> None:
    """The names of the table in ``spec.adapter``'s docstring are those the reference's
    attention, feed-forward and LayerNorm parameters have in a model (the optional biases
    excepted: the reference has none)."""
    import re

    import protocol

    from spec.adapter import Config
    from spec.adapters.reference import ReferenceAdapter

    table = protocol.docstring_section("Canonical parameter names")
    rows = [line for line in table.splitlines() if line.startswith("| ``")]
    names = {n for row in rows for n in re.findall(r"``(\w+)``", row.split("|")[1])}
    optional = {n for row in rows if "optional" in row
                for n in re.findall(r"``(\w+)``", row.split("|")[1])}
    adapter = ReferenceAdapter()
    params = adapter.parameters(adapter.model(Config()))
    leaves = {name.rsplit(".", 1)[1] for name in params
              if re.match(r"(encoder|decoder)\.\d+\.", name)}
    assert leaves == names - optional


def test_a_result_the_tests_keep_is_what_the_build_reuses(tmp_path: Path) -> None:
    """sitedata.keep stamps a result with its sources' key; the build reuses it under that key
    only, and a detection table is handed over only when it has every row."""
    import json

    from tests.mutants import all_mutants, all_variants, detection
    from tests.test_outside import CASES

    target = tmp_path / "conformance-x.json"
    S.keep(target, '{"clauses": []}', "key-1")
    assert json.loads(target.read_text()) == {"clauses": []}
    assert not S._stale(target, "key-1", "auto")
    assert S._stale(target, "key-2", "auto") and not target.exists()
    table = {
        "mutants": [{"mutant": cls.name} for cls in all_mutants()],
        "variants": [{"variant": cls.name} for cls in all_variants()],
        "outside": [{"outside": case.name} for case in CASES],
    }
    path = tmp_path / "detection.json"
    path.write_text(json.dumps(table))
    assert detection.complete(path)
    path.write_text(json.dumps({**table, "outside": table["outside"][1:]}))
    assert not detection.complete(path)
    assert not detection.complete(tmp_path / "missing.json")


def test_a_background_run_stamps_its_result_and_leaves_no_scratch_directory(
    tmp_path: Path,
) -> None:
    """The suite runs of the build run in a temporary directory, removed once they end."""
    target = tmp_path / "conformance-y.json"
    write = f"import json, os; json.dump({{'cwd': os.getcwd()}}, open({str(target)!r}, 'w'))"
    S._start("a run", [sys.executable, "-c", write], target, "key-3", None, 1)
    result = S._finish("a run", target)
    assert result is not None and result["cwd"] != str(Path.cwd())
    assert not Path(result["cwd"]).exists()
    assert target.with_suffix(".key").read_text() == "key-3"
    broken = tmp_path / "conformance-z.json"
    S._start("a broken run", [sys.executable, "-c", "raise SystemExit(3)"], broken, "k", None, 1)
    assert S._finish("a broken run", broken) is None
    assert not broken.with_suffix(".key").exists()
