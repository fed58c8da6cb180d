"""The ``pytest11`` entry point: the suite's options, and :mod:`spec.plugin` and
:mod:`spec.fixtures` registered late.

Options: ``--impl`` (or ``$TRANSFORMER_SPEC_IMPL``), ``--conformance-json PATH``,
``--conformance-md PATH``, ``--expected-deviations FILE``, ``--spec-profile {ci,thorough}``,
``--spec-timeout SECONDS``.
The rest of the plugin is imported when pytest is configured, not when entry points load, so
that coverage tools started by pytest measure it like any other code.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("attention-spec", "conformance to 'Attention Is All You Need'")
    group.addoption(
        "--impl",
        default=None,
        help="implementation under test: reference (default), torch.nn, or module:attribute "
        "naming an adapter (also $TRANSFORMER_SPEC_IMPL)",
    )
    group.addoption("--conformance-json", metavar="PATH", help="write the report as JSON")
    group.addoption("--conformance-md", metavar="PATH", help="write the report as Markdown")
    group.addoption(
        "--expected-deviations",
        metavar="FILE",
        help="clause ids expected to deviate, one per line as 'clause-id: reason'",
    )
    group.addoption(
        "--spec-profile",
        choices=["ci", "thorough"],
        default=None,
        help="hypothesis profile for the property tests (default: ci, derandomised; "
        "also $TRANSFORMER_SPEC_PROFILE)",
    )
    group.addoption(
        "--spec-timeout",
        metavar="SECONDS",
        type=float,
        default=None,
        help="a clause test running longer is interrupted and reported as ERROR "
        "(default: 60; 0: no limit; POSIX main thread only, see spec.timeout)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "clause(id): the paper clause this test checks")
    from spec import fixtures, plugin

    config.pluginmanager.register(plugin, "attention-spec")
    config.pluginmanager.register(fixtures, "attention-spec-fixtures")
    plugin.configure(config)
