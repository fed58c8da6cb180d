"""Sessions: tests (CPU), conformance, lint, typecheck, docs, docs_serve, flakes.

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
    """The project's tests and the spec suite against the reference, with coverage (>= 95%).

    The documentation site is built and checked in chromium too (``apt-get install chromium``;
    without it the browser tests skip, or fail where ``$CI`` is set).
    """
    install(session, "test,docs,browser")  # docs, browser: tests/test_docs_browser.py
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


DOCS_ENV = {"DISABLE_MKDOCS_2_WARNING": "true", "NO_MKDOCS_2_WARNING": "1"}


@nox.session
def docs(session: nox.Session) -> None:
    """Build the site into ``site/``, strictly: a broken link, anchor or cross-reference fails.

    The build runs the conformance suite against the reference and ``torch.nn`` for the
    conformance matrix (reports are cached under ``build/docs-data/`` while ``spec/`` and
    ``transformer/`` are unchanged). Extra arguments go to ``mkdocs build``.
    """
    install(session, "docs")
    session.run("mkdocs", "build", "--strict", *session.posargs, env=DOCS_ENV)


@nox.session
def docs_serve(session: nox.Session) -> None:
    """Serve the site on http://127.0.0.1:8000 and rebuild on changes (arguments: ``mkdocs serve``)."""
    install(session, "docs")
    session.run("mkdocs", "serve", "--dev-addr", "127.0.0.1:8000", *session.posargs, env=DOCS_ENV)


@nox.session
def flakes(session: nox.Session) -> None:
    """The suite ten times against the reference with the thorough profile and hypothesis seeds
    1 to 10 (``scripts/flake_check.py``; its options after ``--``, e.g. ``-- --runs 3``)."""
    install(session)
    session.run("python", "scripts/flake_check.py", *session.posargs)
