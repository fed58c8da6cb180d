"""The reference on CUDA agrees with the reference on the CPU (run by ``nox -s tests_cuda``).

Each test runs one model, with the same weights and inputs, in float64 on the CPU (the
expected values) and in float32, bfloat16 or float16 on CUDA, and compares them with the
tolerances of :mod:`spec.tolerances` for that device and dtype; the model is of the size those
tolerances were derived for (d_model 64, N 2). ``autocast-bf16`` is a float32 model run under
``torch.autocast(dtype=torch.bfloat16)``, as the CUDA benchmark trains. Without a CUDA device
only the CPU float32 case runs: it checks the comparisons themselves.
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

import transformer as T
from spec.tolerances import Tolerance, error_ratio, tolerance

CUDA = torch.cuda.is_available()
no_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device")

# (device, dtype of the weights, autocast dtype or None, tolerance row)
CASES = {
    "cpu-float32": ("cpu", torch.float32, None, torch.float32),
    "cuda-float32": ("cuda", torch.float32, None, torch.float32),
    "cuda-bfloat16": ("cuda", torch.bfloat16, None, torch.bfloat16),
    "cuda-float16": ("cuda", torch.float16, None, torch.float16),
    "cuda-autocast-bf16": ("cuda", torch.float32, torch.bfloat16, torch.bfloat16),
}
PARAMS = [
    pytest.param(name, id=name, marks=[no_cuda] if name.startswith("cuda") else [])
    for name in CASES
]


def config() -> T.TransformerConfig:
    return T.TransformerConfig(
        src_vocab=50,
        tgt_vocab=50,
        d_model=64,
        h=4,
        d_ff=256,
        n_layers=2,
        dropout=0.1,
        share_vocab=True,
        max_len=64,
    )


def models(case: str) -> tuple[T.Transformer, T.Transformer, Tolerance, torch.device]:
    """The float64 CPU model and its copy on the case's device and dtype."""
    device, dtype, _, row = CASES[case]
    torch.manual_seed(0)
    expected = T.Transformer(config()).double().eval()
    actual = copy.deepcopy(expected).to(device=device, dtype=dtype).eval()
    return expected, actual, tolerance(device, row), torch.device(device)


def autocast(case: str) -> contextlib.AbstractContextManager[object]:
    device, _, amp, _ = CASES[case]
    return torch.autocast(device, dtype=amp) if amp else contextlib.nullcontext()


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source (two of three sentences padded), target and shifted target."""
    g = torch.Generator().manual_seed(7)
    src = torch.randint(3, 50, (3, 12), generator=g)
    src[1, 9:] = 0
    src[2, 5:] = 0
    tgt = torch.randint(3, 50, (3, 10), generator=g)
    tgt[2, 7:] = 0
    return src, tgt, T.shift_right(tgt, 1)


@pytest.mark.parametrize("case", PARAMS)
def test_forward(case: str) -> None:
    """Logits of the whole model, padding included."""
    expected, actual, tol, device = models(case)
    src, _, tgt_in = batch()
    with torch.no_grad():
        want = expected(src, tgt_in)
        with autocast(case):
            got = actual(src.to(device), tgt_in.to(device))
    assert error_ratio(got, want, tol) <= 1.0


@pytest.mark.parametrize("case", PARAMS)
def test_incremental_decoding(case: str) -> None:
    """Step-by-step decoding with the key/value cache on the device equals the whole target
    decoded at once on the CPU."""
    expected, actual, tol, device = models(case)
    src, _, tgt_in = batch()
    with torch.no_grad():
        memory = expected.encode(src)
        want = expected.decode(tgt_in, memory, T.padding_mask(src, 0))
        src_d = src.to(device)
        with autocast(case):
            memory_d = actual.encode(src_d)
            state = actual.new_state()
            steps = [
                actual.decode(
                    tgt_in[:, i : i + 1].to(device), memory_d, T.padding_mask(src_d, 0), state
                )
                for i in range(tgt_in.size(1))
            ]
    assert error_ratio(torch.cat(steps, dim=1), want, tol) <= 1.0


@pytest.mark.parametrize("case", PARAMS)
def test_training_step(case: str) -> None:
    """The label-smoothed loss and, in float32, the gradients (evaluation mode: no dropout)."""
    expected, actual, tol, device = models(case)
    src, tgt, tgt_in = batch()
    loss = T.LabelSmoothingLoss(50, 0, 0.1)
    want = loss(expected(src, tgt_in), tgt)
    want.backward()
    with autocast(case):
        logits = actual(src.to(device), tgt_in.to(device))
    got = loss(logits, tgt.to(device))
    got.backward()
    assert error_ratio(got, want, tol) <= 1.0
    if CASES[case][1] == torch.float32 and CASES[case][2] is None:
        for (name, a), b in zip(actual.named_parameters(), expected.parameters(), strict=True):
            assert a.grad is not None and b.grad is not None, name
            # gradients are about 1e-2 in size: compared relative to the largest of them
            scale = float(b.grad.abs().max())
            assert error_ratio(a.grad / scale, b.grad / scale, tol) <= 1.0, name


@pytest.mark.parametrize("case", PARAMS)
def test_greedy_decoding(case: str) -> None:
    """Greedy decoding runs on the device; in float32, with and without the cache, it gives the
    same tokens (in 16-bit formats rounding may break near-ties between tokens either way)."""
    _, actual, _, device = models(case)
    src = batch()[0].to(device)
    with autocast(case):
        cached = T.greedy_decode(actual, src, 12)
        recomputed = T.greedy_decode(actual, src, 12, use_cache=False)
    assert cached.device.type == device.type
    assert cached.shape == recomputed.shape and cached.size(0) == src.size(0)
    if CASES[case][1] == torch.float32 and CASES[case][2] is None:
        assert torch.equal(cached, recomputed)


@no_cuda
def test_optimizer_is_fused_on_cuda() -> None:
    """make_optimizer uses PyTorch's fused Adam for parameters on a CUDA device."""
    p = torch.nn.Parameter(torch.zeros(3, device="cuda"))
    assert T.make_optimizer([p]).defaults["fused"] is True
