"""Tests of the suite's machinery: loading adapters, verdicts, reports, expected deviations."""

from __future__ import annotations

import builtins
import importlib
import inspect
import json
import pkgutil

import pytest
import torch._dynamo  # noqa: F401  (imported lazily by torch; pytester must not unload it)

import spec.adapters.reference
import spec.oracle
import spec.suite
from spec.adapter import AdapterError, NotProvided, capability, load_adapter
from spec.clauses import CLAUSES

pytest_plugins = ["pytester"]

ATTENTION = "spec.suite.test_3_2_1_attention"

BROKEN = """
import math
import torch
from spec.adapter import NotProvided
from spec.adapters.reference import ReferenceAdapter

class NoScale(ReferenceAdapter):
    name = "no-scale"
    def attention(self, q, k, v, mask):
        w = (q @ k.transpose(-2, -1))
        if mask is not None:
            w = w.masked_fill(~mask, float("-inf"))
        return w.softmax(-1).nan_to_num() @ v

class Raises(ReferenceAdapter):
    name = "raises"
    def attention(self, q, k, v, mask):
        raise RuntimeError("kaboom")

class LengthMasks(ReferenceAdapter):
    # masks by key lengths only, as tutorials' valid_lens do: refuses a mask with holes
    name = "length-masks"
    leak = 0

    def attention(self, q, k, v, mask):
        if mask is not None:
            counts = mask.sum(-1, keepdim=True)
            if not torch.equal(torch.arange(mask.shape[-1]) < counts, mask):
                raise NotProvided("attention", "masks by key lengths only")
            mask = torch.arange(mask.shape[-1]) < counts + self.leak
        return super().attention(q, k, v, mask)

class LeakyLengthMasks(LengthMasks):
    # sees one key past the length
    name = "leaky-length-masks"
    leak = 1

class Missing:
    name = "missing"

no_scale = NoScale()
length_masks = LengthMasks()
leaky_length_masks = LeakyLengthMasks()
raises = Raises()
missing = Missing()
not_an_adapter = object()
"""


@pytest.fixture
def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    pytester.makepyfile(broken=BROKEN)
    pytester.syspathinsert()
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    # xdist workers start from the sys.path this process started with: pytest's `pythonpath`
    # setting is what puts the adapter module on theirs
    path = f"pythonpath={pytester.path}"

    def go(*args: str) -> tuple[pytest.RunResult, dict]:
        out = pytester.path / "report.json"
        out.unlink(missing_ok=True)  # never read the report of an earlier run
        result = pytester.runpytest_inprocess(
            "--pyargs", ATTENTION, "-p", "no:cacheprovider", "-o", path,
            "--conformance-json", str(out), *args,
        )  # fmt: skip
        report = json.loads(out.read_text()) if out.exists() else {}
        return result, report

    return go


def verdicts(report: dict) -> dict[str, str]:
    return {c["id"]: c["verdict"] for c in report["clauses"]}


def test_reference_conforms_and_json_has_the_fields(run) -> None:
    result, report = run()
    assert result.ret == 0
    assert report["implementation"] == "reference"
    assert set(verdicts(report).values()) == {"CONFORMS"}
    for clause in report["clauses"]:
        assert {"id", "section", "verdict", "reason", "variant", "diagnosis"} <= set(clause)
    result.stdout.fnmatch_lines(
        ["*conformance*", "3.2.1 Scaled dot-product attention", "*3.2.1/eq1*CONFORMS*"]
    )


def test_a_bug_deviates_with_its_diagnosis(run, pytester: pytest.Pytester) -> None:
    md = pytester.path / "report.md"
    result, report = run("--impl", "broken:no_scale", "--conformance-md", str(md))
    assert result.ret == 1
    clauses = {c["id"]: c for c in report["clauses"]}
    assert clauses["3.2.1/scale"]["verdict"] == "DEVIATES"
    assert (
        clauses["3.2.1/scale"]["diagnosis"] == "no-scale: the scores are not divided by sqrt(d_k)"
    )
    assert clauses["3.2.1/permutation"]["verdict"] == "CONFORMS"  # unaffected clause unchanged
    result.stdout.fnmatch_lines(
        ["*3.2.1/scale DEVIATES*", "*diagnosis: no-scale*", "*reproduce: pytest*"]
    )
    row = next(line for line in md.read_text().splitlines()
               if line.startswith("| [`3.2.1/scale`](clauses/3.2.1/#scale) | "))
    assert " | DEVIATES | " in row


def test_missing_capability_is_not_provided(run) -> None:
    result, report = run("--impl", "broken:missing")
    assert result.ret == 0
    assert set(verdicts(report).values()) == {"NOT PROVIDED"}
    assert "`attention`" in report["clauses"][0]["reason"]


def test_an_exception_is_an_error(run) -> None:
    result, report = run("--impl", "broken:raises")
    assert result.ret == 1
    clause = next(c for c in report["clauses"] if c["id"] == "3.2.1/eq1")
    assert clause["verdict"] == "ERROR" and "kaboom" in clause["reason"]


def test_refused_inputs_leave_the_others_judged(run) -> None:
    """An adapter that refuses some masks (``NotProvided``) is judged on the others: it
    conforms, and the report says what was left out; one that also mishandles the masks it
    takes deviates, never an ERROR or NOT PROVIDED for the inputs it refused."""
    _, report = run("--impl", "broken:length_masks", "-k", "test_mask")
    mask = next(c for c in report["clauses"] if c["id"] == "3.2.1/mask")
    assert mask["verdict"] == "CONFORMS", mask
    assert ("not checked: masked attention where the adapter refused the input "
            "(`attention`: masks by key lengths only)") in mask["reason"]
    _, report = run("--impl", "broken:leaky_length_masks", "-k", "test_mask")
    mask = next(c for c in report["clauses"] if c["id"] == "3.2.1/mask")
    assert mask["verdict"] == "DEVIATES", mask


def test_a_group_of_failures_is_judged_by_its_members() -> None:
    """Hypothesis groups the distinct failures of a property test: deviations and refused
    inputs give the first deviation; refused inputs alone, NOT PROVIDED; anything else, the
    ERROR it would be alone."""
    from spec.plugin import deviation_in, leaves
    from spec.verdicts import Deviation

    group = getattr(builtins, "ExceptionGroup", None)
    if group is None:  # Python 3.10: hypothesis's backport
        group = importlib.import_module("exceptiongroup").ExceptionGroup
    refused, deviation = NotProvided("attention", "wide"), Deviation("m", "summary", None, None)
    assert deviation_in(group("two", [refused, group("one", [deviation])])) is deviation
    assert deviation_in(deviation) is deviation
    assert deviation_in(group("two", [deviation, RuntimeError("kaboom")])) is None
    assert deviation_in(group("one", [refused])) is None
    assert leaves(group("two", [refused, group("one", [deviation])])) == [refused, deviation]


def test_expected_deviations_keep_ci_green(run, pytester: pytest.Pytester) -> None:
    listing = pytester.path / "expected.txt"
    listing.write_text(
        "\ufeff# known problems\n3.2.1/scale: scale fixed later (see #12)\n3.2.1/eq1: same bug\n"
        "  # indented comment\n3.2.1/mask: same bug\n3.2.1/softmax-over-keys: passes\n",
        encoding="utf-8",
    )  # a byte-order mark, and a '#' inside a reason
    result, report = run("--impl", "broken:no_scale", "--expected-deviations", str(listing))
    assert result.ret == 0, result.stdout.str()
    scale = next(c for c in report["clauses"] if c["id"] == "3.2.1/scale")
    assert scale["verdict"] == "DEVIATES" and scale["expected"] == "scale fixed later (see #12)"
    result.stdout.fnmatch_lines(["*3.2.1/softmax-over-keys was expected to deviate*"])


def test_expected_deviation_needs_a_reason(run, pytester: pytest.Pytester) -> None:
    listing = pytester.path / "expected.txt"
    listing.write_text("3.2.1/scale\n")
    result, _ = run("--expected-deviations", str(listing))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*needs a reason*"])
    result, _ = run("--expected-deviations", str(pytester.path / "absent.txt"))
    result.stderr.fnmatch_lines(["*cannot read*"])
    listing.write_text("3.2.1/scale: fine\n9.9/none: typo\n")
    result, report = run("--expected-deviations", str(listing))
    assert result.ret == pytest.ExitCode.USAGE_ERROR and not report
    result.stderr.fnmatch_lines(["*expected.txt:2: unknown clause '9.9/none'*"])
    listing.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    result, report = run("--expected-deviations", str(listing))
    assert result.ret == pytest.ExitCode.USAGE_ERROR and not report
    result.stderr.fnmatch_lines(["*expected.txt is not UTF-8 text*"])


def test_an_expected_deviation_does_not_excuse_an_error(run, pytester: pytest.Pytester) -> None:
    listing = pytester.path / "expected.txt"
    listing.write_text("3.2.1/eq1: known to deviate\n")
    result, report = run("--impl", "broken:raises", "--expected-deviations", str(listing))
    assert result.ret == 1
    eq1 = next(c for c in report["clauses"] if c["id"] == "3.2.1/eq1")
    assert eq1["verdict"] == "ERROR" and eq1["expected"] is None


@pytest.mark.parametrize(
    ("impl", "message"),
    [
        ("nonsense", "use one of"),
        ("no_such_module:x", "cannot import adapter module"),
        ("broken:nothing", "has no attribute"),
        ("broken:not_an_adapter", "needs a non-empty `name`"),
    ],
)
def test_bad_impl_is_a_usage_error(run, impl: str, message: str) -> None:
    result, _ = run("--impl", impl)
    assert result.ret != 0
    assert message in result.stdout.str() + result.stderr.str()


def test_xdist_gives_the_same_report(run) -> None:
    serial_run, serial = run("--impl", "broken:no_scale")
    parallel_run, parallel = run("--impl", "broken:no_scale", "-n", "2")
    assert (serial_run.ret, parallel_run.ret) == (1, 1), parallel_run.stdout.str()[-2000:]
    parallel_run.stdout.fnmatch_lines(["created: 2/2 workers", "*3.2.1/scale DEVIATES*"])
    strip = lambda r: [{k: v for k, v in c.items() if k != "tests"} for c in r["clauses"]]  # noqa: E731
    assert strip(serial) == strip(parallel)


def test_load_adapter_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_adapter().name == "reference"
    monkeypatch.setenv("TRANSFORMER_SPEC_IMPL", "spec.adapters.reference:ReferenceAdapter")
    assert load_adapter().name == "reference"  # a class is instantiated
    with pytest.raises(AdapterError, match="not callable"):
        capability(type("A", (), {"name": "a", "attention": 3})(), "attention")
    with pytest.raises(NotProvided, match="`encode`"):
        capability(object(), "encode")


def suite_clause_ids() -> list[str]:
    ids = []
    for info in pkgutil.iter_modules(spec.suite.__path__):
        module = importlib.import_module(f"spec.suite.{info.name}")
        for name, func in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("test_"):
                marks = [m for m in getattr(func, "pytestmark", []) if m.name == "clause"]
                assert len(marks) == 1, f"{info.name}.{name} needs exactly one clause marker"
                ids.append(marks[0].args[0])
    return ids


def test_every_clause_has_a_test_and_every_test_a_clause() -> None:
    ids = suite_clause_ids()
    unknown = sorted(set(ids) - set(CLAUSES))
    assert not unknown, f"tests name unregistered clauses: {unknown}"
    untested = [c for c in CLAUSES if c not in ids]
    assert not untested, f"registered clauses without a test: {untested}"


def test_reports_render_every_verdict() -> None:
    from spec import report
    from spec.verdicts import Outcome, Verdict

    outcomes = [
        Outcome("3.2.1/eq1", Verdict.DEVIATES, "wrong", diagnosis="no-scale: x"),
        Outcome("3.2.2/eq", Verdict.DEVIATES, "wrong too"),
        Outcome("3.1/residual-norm", Verdict.VARIANT, "norm first", variant="pre-norm"),
        Outcome("3.4/scale", Verdict.NOT_PROVIDED, "no embed"),
        Outcome("3.3/eq2", Verdict.ERROR, "raised: x | y"),
        Outcome("3.3/eq2", Verdict.CONFORMS, ""),
    ]
    rep = report.build("demo", outcomes, {"torch": "x"})
    by_id = {c.id: c for c in rep.clauses}
    assert by_id["3.2.2/eq"].reason.startswith("depends on 3.2.1/eq1")
    assert by_id["3.3/eq2"].verdict is Verdict.ERROR and by_id["3.3/eq2"].tests == 2
    text = report.table(rep)
    assert "[pre-norm]" in text and "Summary: " in text
    assert "raised: x \\| y" in report.markdown(rep)
    assert list(rep.counts()) == ["CONFORMS", "VARIANT", "DEVIATES", "NOT PROVIDED", "ERROR"]


def test_every_report_format_explains_a_deviation(run, pytester: pytest.Pytester) -> None:
    """Terminal, JSON and Markdown each give a failing clause its title, the run that failed,
    the measured value, the criterion, the diagnosis, the command that reruns it and its
    page on the site."""
    md = pytester.path / "report.md"
    result, report = run("--impl", "broken:no_scale", "--conformance-md", str(md))
    scale = next(c for c in report["clauses"] if c["id"] == "3.2.1/scale")
    assert scale["title"] == CLAUSES["3.2.1/scale"].title
    assert scale["run"] in ("cpu float64", "cpu float32")
    assert scale["criterion"].startswith("|actual - expected| <= atol + rtol |expected|")
    assert scale["reproduce"].startswith("pytest '") and "--impl broken:no_scale" in scale["reproduce"]
    assert scale["link"] == "clauses/3.2.1/#scale"
    text = md.read_text()
    for needle in (f"### 3.2.1/scale {CLAUSES['3.2.1/scale'].title.replace('_', chr(92) + '_')}",
                   "- run: cpu", "- criterion: ", "- diagnosis: no-scale", "- reproduce: pytest",
                   "- clause: [clauses/3.2.1/#scale](clauses/3.2.1/#scale)",
                   "| [`3.2.1/scale`](clauses/3.2.1/#scale) |"):
        assert needle in text, needle
    result.stdout.fnmatch_lines(["*Details of the clauses that deviate or err:*",
                                 "*3.2.1/scale Scores are scaled*DEVIATES*", "*run: cpu*",
                                 "*criterion: |actual - expected|*", "*diagnosis: no-scale*",
                                 "*reproduce: pytest*", "*clause: clauses/3.2.1/#scale*"])


def test_a_deviation_without_a_known_bug_says_cause_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from spec import report
    from spec.verdicts import Outcome, Verdict

    monkeypatch.setattr(report, "SITE_URL", "https://example.org/spec")
    rep = report.build("x", [Outcome("3.3/eq2", Verdict.DEVIATES, "off by 3x")], {})
    (clause,) = rep.clauses
    assert dict(report.details(clause))["diagnosis"] == "cause unknown"
    assert clause.link == "https://example.org/spec/clauses/3.3/#eq2"
    assert "- diagnosis: cause unknown" in report.markdown(rep)
    assert "    diagnosis: cause unknown" in report.table(rep)
