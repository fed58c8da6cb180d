"""The project's test session: one thread per xdist worker, and results handed to the docs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SITE = (Path(__file__).resolve().parents[1] / "docs" / "_gen" / "sitedata.py").exists()
"""Whether the documentation's generator is here to hand results to (mutmut's copy of the
project, for one, has only the code and the tests)."""


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # several workers on two cores: torch's own threads would only contend (a training
        # test took 30 times longer beside a busy worker)
        torch.set_num_threads(1)
    elif SITE:
        from tests import docs_data

        docs_data.start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if SITE and not os.environ.get("PYTEST_XDIST_WORKER"):
        from tests import docs_data

        docs_data.finish()
