"""Reliability (issue 7): the suite survives broken adapters, leaves no trace, and never blames
the wrong clause.

Each adapter of tests/broken_adapters.py breaks one thing. The suite runs against it in-process
(pytester), on the modules concerned, and must: finish (every test runs; exit status 0 or 1,
never an interrupted or crashed run), write its JSON report, give the affected clauses ERROR,
DEVIATES or NOT PROVIDED with a reason that names the problem, and give every other clause the
verdict the reference gets on the same modules.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
import torch._dynamo  # imported lazily by torch; pytester must not unload it

import spec.adapters.reference
import spec.check
import spec.oracle
import spec.suite
import spec.tolerances
from spec import timeout
from spec.adapter import Config
from spec.check import Check, Deviation
from spec.clauses import CLAUSES
from spec.cli import private_storage
from spec.guard import ImplementationError, guarded

pytest_plugins = ["pytester"]

HERE = Path(__file__).parent
ATTENTION = "spec.suite.test_3_2_1_attention"
FFN = "spec.suite.test_3_3_ffn"
EMBEDDINGS = "spec.suite.test_3_4_embeddings"
POSITIONAL = "spec.suite.test_3_5_positional"
TRAINING = "spec.suite.test_5_training"
STACKS = "spec.suite.test_3_1_stacks"

ATTENTION_CALLERS = ("3.2.1/eq1", "3.2.1/scale", "3.2.1/mask", "3.2.1/permutation")
"""The 3.2.1 clauses whose tests call ``attention`` (3.2.1/softmax-over-keys reads
``attention_weights`` when the adapter has it, as the reference does)."""


@dataclasses.dataclass(frozen=True)
class Case:
    """A broken adapter, the modules to run, and what the report must say."""

    adapter: str
    modules: tuple[str, ...]
    affected: dict[str, tuple[str, str]]  # clause -> (verdict, text the reason must contain)
    may_change: frozenset[str] = frozenset()  # also affected, in ways not pinned here
    args: tuple[str, ...] = ()


def each(clauses: tuple[str, ...], verdict: str, text: str) -> dict[str, tuple[str, str]]:
    return dict.fromkeys(clauses, (verdict, text))


CASES = [
    Case(
        "MissingAttention",
        (ATTENTION, FFN),
        each(
            (*ATTENTION_CALLERS, "3.2.1/softmax-over-keys"),
            "NOT PROVIDED",
            "the adapter does not provide `attention`: not written yet",
        ),
    ),
    Case(
        "RaisingFeedForward",
        (FFN, ATTENTION),
        each(
            ("3.3/eq2", "3.3/position-wise", "3.3/dims"),
            "ERROR",
            "raised: RuntimeError: feed-forward exploded",
        ),
    ),
    Case("Exits", (ATTENTION,), each(ATTENTION_CALLERS, "ERROR", "raised: SystemExit: 3")),
    Case(
        "ReturnsNone",
        (ATTENTION,),
        each(ATTENTION_CALLERS, "DEVIATES", "adapter.attention: expected a tensor, got NoneType"),
    ),
    Case(
        "WrongShape",
        (ATTENTION,),
        {
            "3.2.1/scale": ("DEVIATES", "Attention(Q, K, V): shape [2, 5, 7], expected [2, 5, 8]"),
            "3.2.1/eq1": ("DEVIATES", "Attention(Q, K, V): shape ["),
            "3.2.1/mask": ("DEVIATES", "masked attention: shape ["),
        },  # the permutation property holds for the truncated output too
    ),
    Case(
        "WrongDtype",
        (ATTENTION,),
        each(
            ATTENTION_CALLERS,
            "DEVIATES",
            "adapter.attention returned dtype torch.float32, expected torch.float64",
        ),
    ),
    Case(
        "WrongDevice",
        (ATTENTION,),
        each(ATTENTION_CALLERS, "DEVIATES", "adapter.attention returned device meta, expected cpu"),
    ),
    Case(
        "NaNAttention",
        (ATTENTION,),
        each(ATTENTION_CALLERS, "DEVIATES", "the output holds NaN or Inf"),
    ),
    Case(
        "InfFeedForward",
        (FFN, ATTENTION),
        {  # 3.3/dims reads only shapes: unaffected
            "3.3/eq2": ("DEVIATES", "FFN(x): the output holds NaN or Inf (0 NaN, 10 Inf"),
            "3.3/position-wise": ("DEVIATES", "the output holds NaN or Inf (0 NaN, "),
        },
    ),
    Case(
        "DropoutInEval",
        (TRAINING,),
        {"5.4/eval-deterministic": ("DEVIATES", "two evaluation-mode calls differ")},
        may_change=frozenset({"5.4/embedding-dropout"}),  # training-mode dropout is off too
    ),
    Case(
        "ModifiesInput",
        (ATTENTION,),
        each(
            ATTENTION_CALLERS,
            "DEVIATES",
            "adapter.attention modified its input in place (argument `q`)",
        ),
    ),
    Case(
        "Sleeps",
        (ATTENTION,),
        {"3.2.1/mask": ("ERROR", "timed out after 1 s in adapter.attention (--spec-timeout 1)")},
        args=("--spec-timeout", "1"),
    ),
    Case(
        "Spins",
        (ATTENTION,),
        {"3.2.1/softmax-over-keys": ("ERROR", "timed out after 1 s in adapter.attention_weights")},
        args=("--spec-timeout", "1"),
    ),
    Case("LeaksGlobalState", (ATTENTION,), {}),
    Case(
        "RefusesFullDropout",
        (TRAINING,),
        # judged on the rates it accepts; the P_drop = 1 part is reported as not checked
        {"5.4/residual-dropout": ("CONFORMS", "the implementation refused the configuration "
                                  "dropout=1.0 (AssertionError: dropout must be < 1)")},
    ),
    Case(
        "AssertingFeedForward",
        (FFN,),
        each(("3.3/eq2", "3.3/position-wise", "3.3/dims"), "ERROR",
             "raised: AssertionError in adapter.feed_forward_forward: sequences must be long"),
    ),
    Case(
        "ForwardIgnoresPadding",
        (STACKS,),
        {"3.1/shared-memory": ("DEVIATES", "forward(src, tgt_in) vs the pieces")},
    ),
]

_REFERENCE: dict[tuple[str, ...], tuple[dict[str, dict[str, Any]], int]] = {}
"""Modules -> the reference's clauses and number of tests there (runs are deterministic)."""


@dataclasses.dataclass
class Run:
    result: pytest.RunResult
    clauses: dict[str, dict[str, Any]]  # id -> the report's entry

    @property
    def tests(self) -> int:
        outcomes = self.result.parseoutcomes()
        return sum(outcomes.get(k, 0) for k in ("passed", "failed", "skipped", "xfailed"))


@pytest.fixture
def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(HERE))  # broken_adapters

    def go(impl: str, modules: tuple[str, ...], *args: str) -> Run:
        out = pytester.path / "report.json"
        out.unlink(missing_ok=True)
        result = pytester.runpytest_inprocess(
            "--pyargs", *modules, "-p", "no:cacheprovider", "--impl", impl,
            "-o", f"pythonpath={HERE}",  # xdist workers keep the sys.path we started with
            "--conformance-json", str(out), *args,
        )  # fmt: skip
        assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), (
            f"the run did not finish normally ({result.ret!r}):\n" + result.stdout.str()[-3000:]
        )
        assert out.exists(), "no JSON report was written"
        result.stdout.fnmatch_lines([f"conformance report written to {out}"])
        return Run(result, {c["id"]: c for c in json.loads(out.read_text())["clauses"]})

    return go


def reference(run, modules: tuple[str, ...]) -> tuple[dict[str, dict[str, Any]], int]:
    if modules not in _REFERENCE:
        ref = run("reference", modules)
        _REFERENCE[modules] = ref.clauses, ref.tests
    return _REFERENCE[modules]


def global_state() -> dict[str, Any]:
    return {
        "default dtype": torch.get_default_dtype(),
        "grad mode": torch.is_grad_enabled(),
        "threads": torch.get_num_threads(),
        "deterministic algorithms": (torch.are_deterministic_algorithms_enabled(),
                                     torch.is_deterministic_algorithms_warn_only_enabled()),
        "cpu rng": torch.get_rng_state(),
        "SIGALRM handler": signal.getsignal(signal.SIGALRM) if hasattr(signal, "SIGALRM") else 0,
        "timer": signal.getitimer(signal.ITIMER_REAL) if hasattr(signal, "setitimer") else 0,
    }


def changed_state(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return [
        k
        for k, v in before.items()
        if not (torch.equal(v, after[k]) if torch.is_tensor(v) else v == after[k])
    ]


@pytest.mark.parametrize("case", CASES, ids=[c.adapter for c in CASES])
def test_a_broken_adapter_is_named_and_nothing_else_changes(run, case: Case) -> None:
    expected, tests = reference(run, case.modules)
    before = global_state()
    broken = run(f"broken_adapters:{case.adapter}", case.modules, *case.args)
    assert not changed_state(before, global_state()), "the run changed global state"
    assert broken.tests == tests, "not every test ran"
    assert list(broken.clauses) == list(expected)
    for cid, clause in broken.clauses.items():
        if cid in case.affected:
            verdict, text = case.affected[cid]
            assert (clause["verdict"], text in clause["reason"]) == (verdict, True), (
                cid,
                clause,
            )
        elif cid not in case.may_change:
            ref = expected[cid]
            assert (clause["verdict"], clause["variant"]) == (ref["verdict"], ref["variant"]), (
                f"{cid} is not affected by {case.adapter} but changed: {clause}"
            )
    failing = any(c["verdict"] in ("DEVIATES", "ERROR") for c in broken.clauses.values())
    assert broken.result.ret == (1 if failing else 0)


def test_the_corpus_is_covered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    import broken_adapters

    assert sorted(broken_adapters.CORPUS) == sorted(c.adapter for c in CASES)
    for case in CASES:
        assert set(case.affected) | case.may_change <= set(CLAUSES), case.adapter


def test_the_diagnosis_of_dropout_in_evaluation_mode(run) -> None:
    broken = run("broken_adapters:DropoutInEval", (TRAINING,))
    assert broken.clauses["5.4/eval-deterministic"]["diagnosis"] == (
        "dropout-in-eval: dropout stays active in evaluation mode"
    )


def test_xdist_workers_enforce_the_time_limit_and_agree_with_a_serial_run(run) -> None:
    """The same report from two workers as from one process, over five modules, with hangs
    (the time limit works in xdist workers: they run tests in the main thread)."""
    modules = (ATTENTION, FFN, EMBEDDINGS, POSITIONAL)
    args = ("--impl", "broken_adapters:Sleeps", "--spec-timeout", "1")
    serial = run(args[1], modules, *args[2:])
    parallel = run(args[1], modules, *args[2:], "-n", "2")
    strip = lambda r: {k: {f: v for f, v in c.items() if f != "tests"} for k, c in r.items()}  # noqa: E731
    assert strip(parallel.clauses) == strip(serial.clauses)
    assert parallel.clauses["3.2.1/mask"]["verdict"] == "ERROR"
    assert "timed out after 1 s in adapter.attention" in parallel.clauses["3.2.1/mask"]["reason"]
    assert parallel.tests == serial.tests
    parallel.result.stdout.fnmatch_lines(["created: 2/2 workers"])
    assert "--spec-timeout is not enforced" not in parallel.result.stdout.str()


def test_an_adapter_that_hangs_on_import_stops_the_run_with_a_reason(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(hangs_on_import="import time\ntime.sleep(3600)\nadapter = None\n")
    pytester.syspathinsert()
    result = pytester.runpytest_inprocess(
        "--pyargs", ATTENTION, "-p", "no:cacheprovider", "--impl", "hangs_on_import:adapter",
        "--spec-timeout", "1",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*loading the adapter timed out after 1 s*"])
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_without_sigalrm_the_run_warns_and_goes_on(run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeout, "unavailable", lambda: "testing without SIGALRM")
    ref = run("reference", (ATTENTION,))
    assert {c["verdict"] for c in ref.clauses.values()} == {"CONFORMS"}
    ref.result.stdout.fnmatch_lines(["*--spec-timeout is not enforced: testing without SIGALRM*"])
    assert ref.result.stdout.str().count("--spec-timeout is not enforced") == 1  # warned once


def test_the_time_limit_option(run, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    real = timeout.limit

    def spy(seconds: float):
        calls.append(seconds)
        return real(seconds)

    monkeypatch.setattr(timeout, "limit", spy)
    run("reference", (ATTENTION,), "--spec-timeout", "0")
    assert calls == []
    run("reference", (ATTENTION,), "--spec-timeout", "7.5")
    assert calls and set(calls) == {7.5}
    calls.clear()
    run("reference", (ATTENTION,), "--pdb")  # a debugging session is never interrupted
    assert calls == []


def test_a_negative_time_limit_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess("--pyargs", ATTENTION, "--spec-timeout", "-1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--spec-timeout must be a number of seconds, 0 (no limit) or more*"])


# -- spec.timeout --------------------------------------------------------------------------------
def test_limit_interrupts_a_sleep_and_restores_the_signal_handler() -> None:
    before = signal.getsignal(signal.SIGALRM)
    message = r"timed out after 0\.2 s \(--spec-timeout 0\.2\)"
    with pytest.raises(timeout.Timeout, match=message), timeout.limit(0.2):
        threading.Event().wait(30)
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    with timeout.limit(30):
        pass  # a block that ends in time
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_limit_fires_again_when_the_first_timeout_is_swallowed() -> None:
    caught = 0
    with pytest.raises(timeout.Timeout), timeout.limit(0.1):
        while True:
            try:
                threading.Event().wait(30)
            except timeout.Timeout:
                caught += 1
                if caught > 1:
                    raise
    assert caught == 2


def test_the_watchdog_is_gone_before_the_handler_is_restored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once the limit has passed, the watchdog sends SIGALRM every REPEAT seconds; one sent
    after the block had restored the default handler ended the whole process (a pytest-xdist
    worker crashed so). The handler is restored only once the watchdog has stopped."""
    alive_at: list[bool] = []
    real = signal.signal

    def spy(signum: int, handler: Any) -> Any:
        if signum == signal.SIGALRM:
            alive_at.append(any(t.name == "attention-spec-watchdog" and t.is_alive()
                                for t in threading.enumerate()))
        return real(signum, handler)

    monkeypatch.setattr(signal, "signal", spy)
    monkeypatch.setattr(timeout, "REPEAT", 0.05)
    with pytest.raises(timeout.Timeout), timeout.limit(0.05):
        with contextlib.suppress(timeout.Timeout):
            threading.Event().wait(30)  # swallowed: the watchdog signals from now on
        threading.Event().wait(0.2)  # its next signal raises again
    assert alive_at == [False, False]  # installed before it starts, restored after it ends


def test_time_spent_waiting_for_a_cpu_is_not_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The limit counts the test's own time: a thread that waited for a CPU held by other
    processes (here: said to have waited 0.1 s more than the wall time) is not timed out, and
    is once it has had its time."""
    start = timeout.waited()
    assert start >= 0 and timeout.waited_in(os.getpid(), threading.get_native_id()) >= start
    waits = iter([start, start + 0.4])
    monkeypatch.setattr(timeout, "waited", lambda tid=None: next(waits, start + 0.4))
    with timeout.limit(0.3):
        threading.Event().wait(0.45)  # 0.45 s of wall time, 0.05 s of its own: no timeout
    waits = iter([start])
    with pytest.raises(timeout.Timeout), timeout.limit(0.2):
        threading.Event().wait(30)
    assert timeout.waited_in(0, 0) == 0.0  # no such process: no waiting to subtract


def test_a_check_within_the_limit_reads_no_schedstat(monkeypatch: pytest.MonkeyPatch) -> None:
    """:func:`spec.timeout.check` runs at every adapter call: before the limit has passed in
    wall-clock time (waiting for a CPU only takes time away) it reads nothing from /proc."""
    reads = []
    monkeypatch.setattr(timeout, "waited", lambda tid=None: reads.append(tid) or 0.0)
    with timeout.limit(30):
        for _ in range(100):
            timeout.check()
    assert len(reads) == 1  # the start's, not one per check


def test_an_escape_from_the_alarm_is_caught() -> None:
    """A block that cancels the timer is still interrupted (the watchdog signals again); one
    that swallows the Timeout is stopped by the next :func:`spec.timeout.check`."""
    with pytest.raises(timeout.Timeout), timeout.limit(0.2):
        signal.setitimer(signal.ITIMER_REAL, 0)
        threading.Event().wait(30)
    with timeout.limit(0.1):
        timeout.check()  # in time: nothing happens
        with contextlib.suppress(timeout.Timeout):
            threading.Event().wait(30)
        with pytest.raises(timeout.Timeout):
            timeout.check()
    timeout.check()  # no limit in force: nothing happens


def test_unavailable_says_why() -> None:
    assert timeout.unavailable() is None
    reasons: list[str | None] = []
    worker = threading.Thread(target=lambda: reasons.append(timeout.unavailable()))
    worker.start()
    worker.join()
    assert reasons == ["tests do not run in the main thread, where Python handles signals"]
    signal.setitimer(signal.ITIMER_REAL, 100)
    try:
        assert "another SIGALRM timer" in str(timeout.unavailable())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    with pytest.MonkeyPatch.context() as m:
        m.delattr(signal, "SIGALRM")
        assert "not available on this platform" in str(timeout.unavailable())


# -- spec.guard ----------------------------------------------------------------------------------
def check() -> Check:
    return Check(CLAUSES["3.2.1/eq1"], spec.adapters.reference.adapter, "pytest x")


def test_guard_names_an_input_modified_in_place_by_keyword_and_inside_a_dict() -> None:
    def scale(q: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        params["W"].mul_(2)
        return q

    q = torch.ones(2, 3)
    with pytest.raises(
        Deviation,
        match=r"adapter.scale modified its input in place "
        r"\(argument `params`\['W'\]\)",
    ):
        guarded(check(), "scale", scale)(q, params={"W": torch.ones(2)})
    with pytest.raises(Deviation, match=r"modified its input in place \(argument `xs`\[1\]\)"):
        guarded(check(), "zero", lambda xs: xs[1].zero_())([q, torch.ones(3)])


def test_guard_accepts_nan_inputs_and_writes_to_the_module_it_is_given() -> None:
    reference = spec.adapters.reference.adapter
    model = reference.model(Config(n_layers=1))
    params = reference.parameters(model)  # views of the model's own parameters
    load = guarded(check(), "load_parameters", reference.load_parameters)
    load(model, {**params, "src_embedding": torch.zeros_like(params["src_embedding"])})
    load(model, params)  # aliases the module's storage: not the caller's input
    x = torch.tensor([[[float("nan"), 1.0]]])
    assert guarded(check(), "noop", lambda t: t)(x) is x


def test_guard_checks_outputs_against_the_inputs_or_the_module() -> None:
    reference = spec.adapters.reference.adapter
    model = reference.model(Config(n_layers=1)).double()
    embed = guarded(check(), "embed_source", lambda m, ids: reference.embed_source(m, ids).float())
    with pytest.raises(
        Deviation,
        match=r"adapter\.embed_source returned dtype torch\.float32, "
        r"expected torch\.float64",
    ):
        embed(model, torch.tensor([[3, 4]]))
    mixed = guarded(check(), "attention", lambda q, k, v, mask: q.float())  # nothing to expect
    q = torch.ones(1, 2, 4, dtype=torch.float64)
    mixed(q, q.float(), q, None)
    guarded(check(), "save", lambda *a: [1, 2])(model, q)  # its result is not used: unchecked
    with pytest.raises(ImplementationError, match=r"adapter\.greedy returned list, expected a "
                       r"tensor of ids"):
        guarded(check(), "greedy", lambda *a: [1, 2])(model, q)
    loss = guarded(check(), "loss", lambda z, target, pad: z.float().sum())
    loss(q, torch.ones(1, 2, dtype=torch.long), 0)  # a loss may be more (or less) precise
    with pytest.raises(Deviation, match=r"adapter\.loss returned device meta, expected cpu"):
        guarded(check(), "loss", lambda z, target, pad: z.sum().to("meta"))(q, None, 0)


def test_guard_names_arguments_by_a_signature_read_once_per_function() -> None:
    """The guard reads a method's signature once per function (a cache): every instance's bound
    method, a plain function and a callable without a weak reference are all named right."""

    class Adapter:
        def encode(self, model: object, x: torch.Tensor) -> torch.Tensor:
            return x.add_(1)

    def encode(model: object, src: torch.Tensor) -> torch.Tensor:
        return src.add_(1)

    first, second = Adapter().encode, Adapter().encode
    for method, label in [(first, "`x`"), (second, "`x`"), (encode, "`src`"), (encode, "`src`"),
                          (functools.partial(encode), "`src`")]:  # fmt: skip
        with pytest.raises(Deviation, match=f"in place \\(argument {label}\\)"):
            guarded(check(), "encode", method)(None, torch.ones(2))
    with pytest.raises(Deviation, match=r"in place \(argument 0\)"):  # no signature: by place
        guarded(check(), "encode", torch.Tensor.add_)(torch.ones(2), 1)


def test_guard_edge_cases() -> None:
    guarded(check(), "attention", lambda q: q)(torch.empty(2, device="meta"))  # nothing to read
    guarded(check(), "encode", lambda: torch.ones(1))()  # no input to compare the output with
    with pytest.raises(Deviation, match=r"adapter\.encode modified its input in place"):
        guarded(check(), "encode", lambda x: x.resize_(1))(torch.ones(3))
    with pytest.raises(Deviation, match=r"adapter\.encode modified its input in place"):
        guarded(check(), "encode", lambda ids: ids.add_(1))(torch.ones(3, dtype=torch.long))
    with pytest.raises(Deviation, match=r"adapter\.encode modified its input in place"):
        guarded(check(), "encode", lambda x: x[1:].zero_())(torch.tensor([float("nan"), 1.0]))
    assert spec.check._same_device(torch.device("cuda"), torch.device("cuda", 0))
    assert not spec.check._same_device(torch.device("cuda", 1), torch.device("cuda", 0))
    assert not spec.check._same_device(torch.device("cpu"), torch.device("meta"))


def test_expect_tensor() -> None:
    c = check()
    t = torch.zeros(2)
    assert c.expect_tensor(t, "x", dtype=torch.float32, device="cpu") is t
    with pytest.raises(Deviation, match="x returned device cpu, expected cuda"):
        c.expect_tensor(t, "x", device="cuda")
    with pytest.raises(Deviation, match="x: expected a tensor, got list"):
        c.expect_tensor([1], "x")
    with pytest.raises(Deviation, match="the output is on device meta"):
        c.close(t.to("meta"), t, "x", spec.tolerances.tolerance("cpu", torch.float32))


# -- leaving no trace ------------------------------------------------------------------------------
def test_python_m_spec_leaves_only_the_report(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No .hypothesis, no .pytest_cache, nothing but the report asked for."""
    monkeypatch.delenv("HYPOTHESIS_STORAGE_DIRECTORY", raising=False)
    clean = pytester.mkdir("clean")
    monkeypatch.chdir(clean)
    module = Path(spec.suite.__file__).parent / "test_3_2_1_attention.py"
    result = pytester.run(
        sys.executable, "-m", "spec", str(module), "-p", "no:benchmark",
        "--conformance-json", "report.json", timeout=300,
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()[-2000:]
    assert sorted(p.name for p in clean.iterdir()) == ["report.json"]


def test_private_storage_is_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    import hypothesis.configuration

    monkeypatch.delenv("HYPOTHESIS_STORAGE_DIRECTORY", raising=False)
    home = vars(hypothesis.configuration).get("__hypothesis_home_directory")
    with private_storage():
        inside = vars(hypothesis.configuration)["__hypothesis_home_directory"]
        assert inside != home and inside.is_dir()
    assert not inside.exists()
    assert vars(hypothesis.configuration).get("__hypothesis_home_directory") == home
    monkeypatch.setenv("HYPOTHESIS_STORAGE_DIRECTORY", "/somewhere")
    with private_storage():  # the user's choice stands
        assert vars(hypothesis.configuration).get("__hypothesis_home_directory") == home


def test_a_declaration_the_protocol_does_not_know_stops_the_run(run, pytester) -> None:
    result = pytester.runpytest_inprocess(
        "--pyargs", ATTENTION, "-p", "no:cacheprovider", "-o", f"pythonpath={HERE}",
        "--impl", "broken_adapters:BadDeclaration",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*adapter.architecture is 'decoder-only'; it must be one of "
                                 "'encoder-decoder', 'encoder-only', 'attention-only'*"])
