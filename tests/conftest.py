"""The project's test session: one thread per xdist worker, and results handed to the docs."""

from __future__ import annotations

import os

import pytest
import torch

from tests import docs_data


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # two workers on two cores: torch's own threads would only contend (a training test
        # took 30 times longer beside a busy worker)
        torch.set_num_threads(1)
    else:
        docs_data.start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        docs_data.finish()
