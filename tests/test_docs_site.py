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
