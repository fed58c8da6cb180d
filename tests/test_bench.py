"""The benchmark (``benchmarks/bench.py``, the package ``benchmarks/refbench/``): its CPU path
runs end to end on tiny models, it refuses to time models that disagree, and its FLOP count is
the one PyTorch's counter makes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import transformer as T
from benchmarks.refbench import cli, models, report
from benchmarks.refbench.mfu import peak_bf16_flops, train_step_flops
from benchmarks.refbench.suite import bench_suite
from benchmarks.refbench.workloads import SIZES, Workload, make_batch


def test_quick_run(tmp_path: Path) -> None:
    """``--quick`` on the CPU: every part but the suite (timed below), MFU with a given peak."""
    out = tmp_path / "bench.json"
    with torch.random.fork_rng():
        code = cli.main(["--quick", "--skip", "suite", "--peak-tflops", "1", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["environment"]["torch"] == torch.__version__
    (tiny,) = result["models"]
    assert tiny["size"]["name"] == "tiny"
    assert all(v <= 1e-4 for v in tiny["agreement"].values())
    for part in ("training", "inference"):
        assert tiny[part]["ratio"] > 0
        assert set(tiny[part]["tokens_per_s"]) == {"reference", "torch.nn"}
    memory = tiny["training"]["peak_memory_bytes"]
    assert all(isinstance(v, int) and v > 0 for v in memory.values())
    rows = result["decoding"]["rows"]
    assert [r["length"] for r in rows] == [4, 8]
    assert all(r["same_tokens"] and r["same_tokens_torch_nn"] for r in rows)
    (mfu,) = result["mfu"]["rows"]
    assert mfu["mfu"] > 0 and mfu["flops_per_step"]["total"] > 0
    assert "suite" not in result


def test_render_and_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite is timed in a subprocess; the tables show every part."""

    def fake_run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert command[1:3] == ["-m", "spec"]
        return subprocess.CompletedProcess(command, 0, "Summary: 48 CONFORMS\n90 passed\n", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    suite = bench_suite(cli.parse_args(["--quick"]))
    assert suite["returncode"] == 0 and suite["summary"] == "90 passed"
    env = report.environment(torch.device("cpu"), 2)
    text = report.render(
        {
            "environment": env,
            "suite": suite,
            "mfu": {"rows": [], "device": "x", "peak_flops": None, "why_no_mfu": ""},
        }
    )
    assert "Conformance suite:" in text and "90 passed" in text


def test_disagreement_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Models that compute different functions are never timed."""
    with torch.random.fork_rng():
        ref, other = models.build_pair(SIZES["tiny"], torch.device("cpu"))
    batch = make_batch(ref.config, SIZES["tiny"].workload["cpu"], torch.device("cpu"))
    models.check_agreement(ref, other, batch, 1e-4)
    with torch.no_grad():
        other.transformer.decoder.layers[0].linear1.bias.add_(0.1)
    with pytest.raises(models.Disagreement, match="refusing to report"):
        models.check_agreement(ref, other, batch, 1e-4)

    def disagree(*args: object) -> None:
        raise models.Disagreement("the models disagree")

    monkeypatch.setattr(models, "check_agreement", disagree)
    out = tmp_path / "bench.json"
    with torch.random.fork_rng():
        assert cli.main(["--quick", "--skip", "decoding,suite", "--json", str(out)]) == 2
    assert not out.exists()


def test_flops_formula_matches_flop_counter() -> None:
    """``train_step_flops``: matrix products of forward and backward, as torch counts them
    (with the math attention kernel, whose products the counter sees; it computes the causal
    square in full, hence ``attention_full``)."""
    config = SIZES["tiny"].config()
    model = T.Transformer(config)
    work = Workload(2, 8, 6)
    batch = make_batch(config, work, torch.device("cpu"), padding=0.0)
    loss = T.LabelSmoothingLoss(config.tgt_vocab, config.pad_id, 0.1)
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        loss(model(batch.src, batch.tgt_in), batch.tgt).backward()
    flops = train_step_flops(config, work.batch, work.src_len, work.tgt_len)
    assert counter.get_total_flops() == flops["linear"] + flops["attention_full"]
    assert flops["total"] == flops["linear"] + flops["attention"] < counter.get_total_flops()


def test_flops_of_the_base_model() -> None:
    """About 6 x parameters x tokens: the rule of thumb, for the base model."""
    config = SIZES["base"].config()
    flops = train_step_flops(config, 1, 100, 100)
    weights = sum(
        p.numel()
        for name, p in T.Transformer(config).named_parameters()
        if p.dim() == 2 and "embed" not in name
    )
    # every weight matrix sees 100 tokens (the cross-attention's W^K, W^V the source ones);
    # the generator (tied to the embedding) adds 2 d V per target token
    expected_linear = 6 * weights * 100 + 6 * 100 * config.d_model * config.tgt_vocab
    assert flops["linear"] == expected_linear


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA H200 NVL", 835e12),
        ("NVIDIA GH200 480GB", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("Tesla T4", None),
    ],
)
def test_peak_table(name: str, peak: float | None) -> None:
    assert peak_bf16_flops(name) == peak


def test_cuda_needs_a_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(SystemExit, match=r"torch\.cuda\.is_available"):
        cli.run(cli.parse_args(["--device", "cuda", "--quick"]))


def test_the_script_is_the_entry_point(tmp_path: Path) -> None:
    """``python benchmarks/bench.py`` (what ``nox -s bench`` runs) works from any directory."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
    done = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: bench.py")
