"""The clause registry: complete, well-formed, consistent (spec/clauses.py)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from spec import clauses
from spec.clauses import CLAUSES, SECTIONS, Clause, Variant

# Every clause id of the catalogue (shared/paper-clauses.md), in paper order. Hard-coded on
# purpose: the catalogue is not available in CI, and these ids are a published interface.
EXPECTED_IDS = [
    "3.1/encoder-stack",
    "3.1/encoder-layer",
    "3.1/residual-norm",
    "3.1/no-final-norm",
    "3.1/width",
    "3.1/decoder-layer",
    "3.1/decoder-causal",
    "3.1/shifted-right",
    "3.1/shared-memory",
    "3.2.1/eq1",
    "3.2.1/scale",
    "3.2.1/softmax-over-keys",
    "3.2.1/mask",
    "3.2.1/permutation",
    "3.2.2/eq",
    "3.2.2/head-dims",
    "3.2.2/heads-split-by-projection",
    "3.2.3/cross-attention",
    "3.2.3/encoder-self",
    "3.2.3/decoder-self",
    "3.3/eq2",
    "3.3/position-wise",
    "3.3/dims",
    "3.4/learned-embeddings",
    "3.4/scale",
    "3.4/weight-tying",
    "3.4/output-softmax",
    "3.5/formula",
    "3.5/added",
    "3.5/wavelengths",
    "3.5/relative-linear",
    "3.5/extrapolation",
    "5.3/adam",
    "5.3/eq3",
    "5.4/residual-dropout",
    "5.4/embedding-dropout",
    "5.4/dropout-elsewhere",
    "5.4/eval-deterministic",
    "5.4/label-smoothing",
    "6.1/beam-search",
    "table3/param-formula",
    "practice/padding",
    "practice/batch-independence",
    "practice/incremental-decoding",
    "practice/save-load",
    "practice/gradients",
    "practice/trainable",
    "practice/devices-dtypes",
]

# Variant names other parts of the project (adapters, diagnosis, docs) rely on.
EXPECTED_VARIANTS = {
    "3.1/residual-norm": {"pre-norm"},
    "3.1/no-final-norm": {"final-norm"},
    "3.2.1/mask": {"large-negative-mask"},
    "3.2.2/eq": {"projection-biases", "fused-qkv"},
    "3.2.2/head-dims": {"projection-biases"},
    "3.3/eq2": {"gelu", "gated"},
    "3.4/weight-tying": {"untied-embeddings", "two-way-tying"},
    "3.4/output-softmax": {"generator-bias"},
    "3.5/formula": {"concatenated-sin-cos", "learned-positions"},
    "3.5/relative-linear": {"learned-positions"},
    "3.5/extrapolation": {"learned-positions"},
    "3.5/wavelengths": {"learned-positions"},
    "5.3/eq3": {"step-zero"},
    "5.4/dropout-elsewhere": {"attention-dropout", "ffn-dropout"},
    "5.4/label-smoothing": {
        "spread-excluding-true-and-pad",
        "kl-loss",
        "summed-loss",
        "mean-over-all-positions",
        "mean-over-sentences",
    },
    "6.1/beam-search": {"finished-pool"},
}

ID = re.compile(r"^(?P<section>\d+(\.\d+)*|table3|practice)/[a-z0-9]+(-[a-z0-9]+)*$")
KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def test_every_catalogue_clause_is_registered_in_paper_order() -> None:
    assert list(CLAUSES) == EXPECTED_IDS


def test_ids_are_unique_and_keyed_by_their_own_id() -> None:
    assert len(set(EXPECTED_IDS)) == len(EXPECTED_IDS)
    for key, clause in CLAUSES.items():
        assert key == clause.id


@pytest.mark.parametrize("clause_id", EXPECTED_IDS)
def test_clause_is_well_formed(clause_id: str) -> None:
    clause = CLAUSES[clause_id]
    match = ID.match(clause.id)
    assert match, clause.id
    assert match["section"] == clause.section
    assert clause.section in SECTIONS
    assert clause.group == ("practice" if clause.section == "practice" else "paper")
    assert clause.title and clause.statement.strip()
    assert clause.title == clause.title.strip() and not clause.title.endswith(".")
    if clause.equation is not None:
        assert "$" not in clause.equation and clause.equation.strip()
    names = [v.name for v in clause.variants]
    assert len(set(names)) == len(names)
    for v in clause.variants:
        assert KEBAB.match(v.name), v.name
        assert v.description.strip()


def test_sections_in_paper_order_and_all_used() -> None:
    assert list(SECTIONS) == [
        "3.1",
        "3.2.1",
        "3.2.2",
        "3.2.3",
        "3.3",
        "3.4",
        "3.5",
        "5.3",
        "5.4",
        "6.1",
        "table3",
        "practice",
    ]
    assert SECTIONS["3.2.1"] == "Scaled dot-product attention"
    assert {c.section for c in CLAUSES.values()} == set(SECTIONS)


def test_by_section_groups_in_order() -> None:
    grouped = clauses.by_section()
    assert list(grouped) == list(SECTIONS)
    flat = [c.id for section in grouped.values() for c in section]
    assert flat == EXPECTED_IDS
    assert [c.id for c in grouped["3.2.2"]] == [
        "3.2.2/eq",
        "3.2.2/head-dims",
        "3.2.2/heads-split-by-projection",
    ]


def test_depends_on_refers_to_registered_clauses_without_cycles() -> None:
    for clause in CLAUSES.values():
        for dep in clause.depends_on:
            assert dep in CLAUSES, f"{clause.id} depends on unknown {dep}"
            assert dep != clause.id
    # Depth-first search for a cycle.
    state: dict[str, str] = {}

    def visit(cid: str) -> None:
        assert state.get(cid) != "active", f"dependency cycle through {cid}"
        if state.get(cid) == "done":
            return
        state[cid] = "active"
        for dep in CLAUSES[cid].depends_on:
            visit(dep)
        state[cid] = "done"

    for cid in CLAUSES:
        visit(cid)


def test_documented_dependencies() -> None:
    assert "3.2.1/eq1" in CLAUSES["3.2.2/eq"].depends_on
    assert {"3.2.2/eq", "3.3/eq2"} <= set(CLAUSES["3.1/residual-norm"].depends_on)
    assert "3.5/formula" in CLAUSES["3.4/scale"].depends_on


@pytest.mark.parametrize("clause_id", sorted(EXPECTED_VARIANTS))
def test_expected_variants_are_named(clause_id: str) -> None:
    names = {v.name for v in CLAUSES[clause_id].variants}
    assert EXPECTED_VARIANTS[clause_id] <= names


def test_groups_keep_paper_and_practice_apart() -> None:
    practice = [c.id for c in CLAUSES.values() if c.group == "practice"]
    assert practice == [i for i in EXPECTED_IDS if i.startswith("practice/")]


def test_equations_for_the_numbered_equations() -> None:
    for cid in ("3.2.1/eq1", "3.2.2/eq", "3.3/eq2", "3.5/formula", "5.3/eq3"):
        assert CLAUSES[cid].equation, cid
    assert r"\sqrt{d_k}" in (CLAUSES["3.2.1/eq1"].equation or "")


def test_get_returns_the_clause() -> None:
    assert clauses.get("3.2.1/scale") is CLAUSES["3.2.1/scale"]


def test_get_unknown_id_suggests_close_ids() -> None:
    with pytest.raises(KeyError) as info:
        clauses.get("3.2.1/scaling")
    message = str(info.value)
    assert "3.2.1/scaling" in message and "3.2.1/scale" in message


def test_get_unknown_id_without_close_match() -> None:
    with pytest.raises(KeyError, match="unknown clause id 'zzz'"):
        clauses.get("zzz")


def test_variant_lookup() -> None:
    clause = CLAUSES["3.1/residual-norm"]
    assert clause.variant("pre-norm").name == "pre-norm"
    with pytest.raises(KeyError) as info:
        clause.variant("post-norm")
    message = str(info.value)
    assert "3.1/residual-norm" in message and "post-norm" in message and "pre-norm" in message


def test_variant_lookup_on_clause_without_variants() -> None:
    with pytest.raises(KeyError, match="none"):
        CLAUSES["3.2.1/scale"].variant("anything")


def test_clauses_are_frozen() -> None:
    clause = CLAUSES["3.3/eq2"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        clause.title = "changed"  # type: ignore[misc]
    assert isinstance(clause.variants[0], Variant) and isinstance(clause, Clause)
