"""Sessions: tests (CPU), quick, conformance, matrix, lint, typecheck, docs, docs_serve, flakes,
mutation, bench, tests_cuda.

CPU sessions install ``torch==2.13.0`` (a CPU build); set ``ATTENTION_SPEC_TORCH`` to another
requirement (for example ``torch>=2.4``) to use a different one.

``tests_cuda`` is for a machine with an NVIDIA GPU: it creates no virtualenv and installs
nothing, using the current environment's torch (a CUDA build), pytest and hypothesis.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

TORCH = os.environ.get("ATTENTION_SPEC_TORCH", "torch==2.13.0")
MUTMUT = "mutmut==3.8.1"


def install(session: nox.Session, extras: str = "") -> None:
    """Install the pinned torch first, so that the project's range installs nothing more.

    pip byte-compiles what it installs in one process (about 30 s for torch and the extras of
    ``tests`` on two cores); it is told not to, and ``scripts/compile_env.py`` does it on every
    core, once for each set of requirements."""
    session.install("--no-compile", TORCH)
    project = f".[{extras}]" if extras else "."
    session.install("--no-compile", "-e", project)
    wanted = f"{TORCH} {project}".encode() + Path("pyproject.toml").read_bytes()
    session.run_install("python", "scripts/compile_env.py", hashlib.sha256(wanted).hexdigest())


XDIST = ["-n", "3", "--dist", "worksteal"]
"""On two cores: some tests wait (for subprocesses, for time limits to pass), and a third worker
uses what they leave idle; workers steal queued tests so that they end together."""


@nox.session
def tests(session: nox.Session) -> None:
    """The project's tests and the spec suite against the reference, with coverage (>= 95%);
    then the documentation site, built and checked in chromium (``apt-get install chromium``;
    without it the browser tests skip, or fail where ``$CI`` is set).

    The site is checked after the other tests because the build reuses what they made: the
    suite's reports on every implementation and the corpora's detection table
    (``tests/docs_data.py``), so that it runs nothing twice. With extra arguments (they go to
    pytest) there is one run, the browser tests in it wherever they are selected.
    """
    install(session, "test,docs,browser,matrix")  # docs, browser: tests/test_docs_browser.py;
    # matrix: tests/test_matrix.py
    browser = "tests/test_docs_browser.py"
    session.run(
        "pytest",
        *XDIST,
        "--cov",
        "--cov-report=term",
        "--durations=15",  # the slowest tests, so that a regression shows
        "tests",
        "spec/suite",
        *(session.posargs or ["--ignore", browser]),
    )
    if not session.posargs:
        session.run("pytest", "--durations=5", browser)


@nox.session
def quick(session: nox.Session) -> None:
    """The inner loop while changing code (about 80 s of tests on two cores): the tests not marked
    ``slow`` (see ``pyproject.toml``: no whole-suite runs of the corpora or the libraries, none of
    the process-outcome tests, which wait on time limits, no browser), without coverage. Not the
    gate: ``nox -s tests`` runs everything, as CI does. Extra arguments go to pytest."""
    install(session, "test,docs,matrix")
    session.run("pytest", *XDIST, "-m", "not slow", "--durations=10", "tests", "spec/suite",
                *session.posargs)


@nox.session
def conformance(session: nox.Session) -> None:
    """The conformance suite; extra arguments go to pytest (``-- --impl torch.nn``)."""
    install(session)
    session.run("python", "-m", "spec", *session.posargs)


@nox.session
def matrix(session: nox.Session) -> None:
    """The conformance matrix: the suite against every shipped adapter (the reference,
    ``torch.nn`` and the libraries of the extra ``matrix``, installed at their pinned versions),
    one JSON report each in ``build/matrix/``, then ``scripts/matrix.py`` prints the combined
    table and writes ``build/matrix/matrix.md``. Extra arguments go to each suite run."""
    install(session, "matrix")
    names = session.run(
        "python", "-c", "from spec.adapter import SHIPPED; print(*SHIPPED)", silent=True
    )
    os.makedirs("build/matrix", exist_ok=True)
    reports = []
    for name in str(names).split():
        report = f"build/matrix/{name}.json"
        # exit status 1: some clause deviates or errs, which is what the matrix shows
        session.run("python", "-m", "spec", "-q", "--impl", name, "--conformance-json", report,
                    *session.posargs, success_codes=[0, 1])
        reports.append(report)
    session.run("python", "scripts/matrix.py", "--markdown", "build/matrix/matrix.md", *reports)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over transformer/, spec/ and benchmarks/."""
    install(session, "dev")
    session.run("mypy")


DOCS_ENV = {"DISABLE_MKDOCS_2_WARNING": "true", "NO_MKDOCS_2_WARNING": "1"}


@nox.session
def docs(session: nox.Session) -> None:
    """Build the site into ``site/``, strictly: a broken link, anchor or cross-reference fails.

    The build runs the conformance suite against the reference, ``torch.nn`` and the libraries
    (the extra ``matrix``) for the conformance matrix (reports are cached under
    ``build/docs-data/`` while ``spec/`` and ``transformer/`` are unchanged). Extra arguments go
    to ``mkdocs build``.
    """
    install(session, "docs,matrix")
    session.run("mkdocs", "build", "--strict", *session.posargs, env=DOCS_ENV)


@nox.session
def docs_serve(session: nox.Session) -> None:
    """Serve the site on http://127.0.0.1:8000 and rebuild on changes (arguments: ``mkdocs serve``)."""
    install(session, "docs,matrix")
    session.run("mkdocs", "serve", "--dev-addr", "127.0.0.1:8000", *session.posargs, env=DOCS_ENV)


@nox.session
def flakes(session: nox.Session) -> None:
    """The suite ten times against the reference with the thorough profile and hypothesis seeds
    1 to 10 (``scripts/flake_check.py``; its options after ``--``, e.g. ``-- --runs 3``)."""
    install(session)
    session.run("python", "scripts/flake_check.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark (``benchmarks/bench.py``): the reference against ``torch.nn.Transformer``
    (training step, inference, peak memory), greedy decoding with and without the key/value
    cache, the suite's wall time; a table, and JSON in ``build/bench/bench.json``. Its options
    after ``--``: ``-- --device cuda`` (adds model FLOPs utilisation), ``-- --quick``."""
    install(session)
    session.run("python", "benchmarks/bench.py", *session.posargs)


CUDA_PREFLIGHT = """
import sys, torch
if not torch.cuda.is_available():
    sys.exit(
        "tests_cuda needs an NVIDIA GPU: torch.cuda.is_available() is False "
        f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); "
        "run the CPU sessions (nox -s tests) instead"
    )
print("CUDA:", torch.cuda.get_device_name(0), "torch", torch.__version__)
"""


@nox.session(venv_backend="none")
def tests_cuda(session: nox.Session) -> None:
    """On a GPU: the spec suite and the project's tests with the CUDA parametrisations active
    (float32, bfloat16 and float16 against the CPU float64 oracle, with the tolerances of
    ``spec/tolerances.py``; ``tests/test_cuda.py`` compares the reference on CUDA with the
    reference on the CPU), then the benchmark with ``--device cuda``.

    Uses the current environment (no virtualenv, no package index): torch with CUDA, pytest
    and hypothesis must be installed, and this checkout too for ``python -m spec`` (the
    benchmark times it): ``pip install --no-deps --no-build-isolation -e .`` needs no index.
    Fails at once, saying so, without a CUDA device. Extra arguments go to pytest.
    """
    session.run("python", "-c", CUDA_PREFLIGHT)
    # the suite's pytest plugin from this checkout, whether or not the package is installed
    plugin = ["-p", "no:attention_spec", "-p", "spec.pytest_plugin"]
    session.run(
        "python",
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        *plugin,
        "spec/suite",
        "tests",
        *session.posargs,
    )
    session.run("python", "benchmarks/bench.py", "--device", "cuda")


@nox.session
def mutation(session: nox.Session) -> None:
    """Mutation testing of ``transformer/`` with mutmut, then the score per module.

    mutmut (``[tool.mutmut]`` in pyproject.toml) works in ``mutants/``; each mutant runs the
    tests that reach the mutated function, from ``tests/test_reference*.py`` and the suite.
    ``scripts/mutation_report.py`` prints killed/survived/timeout per module and fails if the
    core modules score below 90%, a survivor is not explained in
    ``tests/mutation-equivalents.md``, or a decorated function escapes mutation. A run starts
    afresh (about 10 minutes on two cores, 1,586 mutants);
    ``-- --incremental`` keeps ``mutants/`` so that mutmut retests only what changed.
    """
    install(session, "test")
    session.install(MUTMUT)
    incremental = "--incremental" in session.posargs
    if not incremental:
        shutil.rmtree("mutants", ignore_errors=True)
    children = str(os.cpu_count() or 2)
    threads = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one thread per mutant process
    session.run("mutmut", "run", "--max-children", children, env=threads)
    session.run("python", "scripts/mutation_report.py")
