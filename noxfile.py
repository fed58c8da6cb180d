"""Sessions: tests (CPU), conformance, lint, typecheck.

CPU sessions install ``torch==2.13.0`` (a CPU build); set ``ATTENTION_SPEC_TORCH`` to another
requirement (for example ``torch>=2.4``) to use a different one.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

TORCH = os.environ.get("ATTENTION_SPEC_TORCH", "torch==2.13.0")


def install(session: nox.Session, extras: str = "") -> None:
    """Install the pinned torch first, so that the project's range installs nothing more."""
    session.install(TORCH)
    session.install("-e", f".[{extras}]" if extras else ".")


@nox.session
def tests(session: nox.Session) -> None:
    """The project's tests and the spec suite against the reference, with coverage (>= 95%)."""
    install(session, "test")
    session.run(
        "pytest",
        "-n",
        "2",
        "--cov",
        "--cov-report=term",
        "tests",
        "spec/suite",
        *session.posargs,
    )


@nox.session
def conformance(session: nox.Session) -> None:
    """The conformance suite; extra arguments go to pytest (``-- --impl torch.nn``)."""
    install(session)
    session.run("python", "-m", "spec", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over transformer/ and spec/."""
    install(session, "dev")
    session.run("mypy")
