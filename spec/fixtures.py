"""The suite's parametrisation and fixtures: every clause test runs on each device and dtype of
:data:`ENVS` (``env``), seeded from its name (``rng``), judged by a :class:`~spec.check.Check`
(``clause``) against the adapter under test (``adapter``), and isolated: it leaves no global
torch state changed (``_isolate``).

Registered with :mod:`spec.plugin` by :mod:`spec.pytest_plugin`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import pytest
import torch

from .adapter import Adapter
from .check import Check, Env
from .clauses import CLAUSES
from .plugin import CHECK_KEY, plugin_of, reproduce
from .tolerances import tolerance

# -- parametrisation over devices and dtypes ----------------------------------------------------
ENVS: list[tuple[str, torch.dtype]] = [
    ("cpu", torch.float64),
    ("cpu", torch.float32),
    ("cuda", torch.float32),
    ("cuda", torch.bfloat16),
    ("cuda", torch.float16),
]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "env" not in metafunc.fixturenames:
        return
    no_cuda = pytest.mark.skip(reason="no CUDA device")
    params = [
        pytest.param(
            (device, dtype),
            id=f"{device}-{str(dtype).removeprefix('torch.')}",
            marks=[no_cuda] if device == "cuda" and not torch.cuda.is_available() else [],
        )
        for device, dtype in ENVS
    ]
    metafunc.parametrize("env", params, indirect=True)


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def adapter(request: pytest.FixtureRequest) -> Adapter:
    """The adapter of the implementation under test."""
    return plugin_of(request.config).load()


@pytest.fixture
def env(request: pytest.FixtureRequest) -> Env:
    """Device, dtype and tolerance of this parametrisation."""
    device, dtype = request.param
    return Env(torch.device(device), dtype, tolerance(device, dtype))


def seed_of(item: pytest.Item) -> int:
    """A seed that depends on the test's module and name only (not on order or paths)."""
    module = getattr(item, "module", None)
    return zlib.crc32(f"{getattr(module, '__name__', '')}::{item.name}".encode())


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> torch.Generator:
    """A CPU generator seeded from the test's name."""
    return torch.Generator().manual_seed(seed_of(request.node))


@pytest.fixture
def clause(request: pytest.FixtureRequest, adapter: Adapter) -> Check:
    """The judge for the clause named by the test's ``clause`` marker."""
    marker = request.node.get_closest_marker("clause")
    if marker is None or len(marker.args) != 1:
        raise pytest.UsageError(f"{request.node.nodeid} needs @pytest.mark.clause('<id>')")
    cid = marker.args[0]
    if cid not in CLAUSES:
        raise pytest.UsageError(f"{request.node.nodeid} names unregistered clause {cid!r}")
    check = Check(CLAUSES[cid], adapter, reproduce(request.node, plugin_of(request.config).impl))
    request.node.stash[CHECK_KEY] = check
    return check


@pytest.fixture(autouse=True)
def _isolate(request: pytest.FixtureRequest) -> Iterator[None]:
    """Clause tests run seeded and leave no global state changed (RNG, dtype, grad mode...)."""
    if request.node.get_closest_marker("clause") is None:
        yield
        return
    cuda = list(range(torch.cuda.device_count()))
    saved = (
        torch.get_default_dtype(),
        torch.is_grad_enabled(),
        (torch.are_deterministic_algorithms_enabled(),
         torch.is_deterministic_algorithms_warn_only_enabled()),
        torch.get_num_threads(),
        torch.get_default_device(),
    )
    with torch.random.fork_rng(devices=cuda):
        seed = seed_of(request.node)
        torch.default_generator.manual_seed(seed)  # the suite's devices: the CPU and CUDA's
        if cuda:  # (torch.manual_seed also queues a seeding of every device kind torch knows,
            torch.cuda.manual_seed_all(seed)  # with a stack trace each, where none is present)
        torch.set_num_threads(1)  # the suite's models are small: threads only contend
        try:
            yield
        finally:
            torch.set_default_dtype(saved[0])
            torch.set_grad_enabled(saved[1])
            deterministic = (torch.are_deterministic_algorithms_enabled(),
                             torch.is_deterministic_algorithms_warn_only_enabled())
            if deterministic != saved[2]:  # setting it imports torch._inductor: 1.7 s at first
                torch.use_deterministic_algorithms(saved[2][0], warn_only=saved[2][1])
            torch.set_num_threads(saved[3])
            if torch.get_default_device() != saved[4]:  # setting it, even to the same device,
                torch.set_default_device(saved[4])  # routes every later torch call via Python
