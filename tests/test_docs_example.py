"""The guide's example (docs/examples: a tiny Transformer and its adapter) gets the verdicts that
the guide "Point the suite at your own implementation" shows, so that the guide cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import spec.suite

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
SUITE = Path(spec.suite.__file__).parent

# --8<-- [start:verdicts]
MODULES = ["test_3_2_1_attention", "test_3_2_2_multi_head", "test_3_3_ffn", "test_5_training"]
EXPECTED = {
    "3.2.1/eq1": "CONFORMS",
    "3.2.1/scale": "CONFORMS",
    "3.2.1/softmax-over-keys": "CONFORMS",
    "3.2.1/mask": "CONFORMS",
    "3.2.1/permutation": "CONFORMS",
    "3.2.2/eq": "VARIANT projection-biases",  # nn.Linear has biases
    "3.2.2/head-dims": "VARIANT projection-biases",
    "3.2.2/heads-split-by-projection": "CONFORMS",
    "3.3/eq2": "CONFORMS",
    "3.3/position-wise": "CONFORMS",
    "3.3/dims": "CONFORMS",
    "5.3/adam": "CONFORMS",
    "5.3/eq3": "CONFORMS",
    "5.4/label-smoothing": "CONFORMS",  # nn.CrossEntropyLoss(label_smoothing=): over all V
}
# --8<-- [end:verdicts]


def test_the_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny Transformer trains a step and decodes; its adapter loads by name."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import tiny_transformer as tiny

    from spec.adapter import load_adapter

    torch.manual_seed(0)
    model = tiny.Transformer(vocab=13, d_model=16, heads=4, d_ff=32, layers=2, dropout=0.0)
    src = torch.randint(3, 13, (2, 5))
    logits = model(src, src)
    assert logits.shape == (2, 5, 13)
    logits.logsumexp(-1).mean().backward()
    assert model.greedy(src, bos=1, max_len=4).shape == (2, 4)
    adapter = load_adapter("tiny_adapter:adapter")
    assert adapter.name == "tiny-transformer"
    assert set(adapter.not_provided) == {"beam_search", "decode_incremental"}


@pytest.mark.slow
def test_the_suite_gives_the_verdicts_the_guide_shows(tmp_path: Path) -> None:
    """The suite's 3.2.1, 3.2.2, 3.3 and 5 modules against the example: the guide's verdicts;
    clauses the guide does not list (added to those sections later) must conform."""
    report = tmp_path / "tiny.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("PYTEST_ADDOPTS", None)
    command = [
        sys.executable,
        "-m",
        "spec",
        "--impl",
        "tiny_adapter:adapter",
        f"--conformance-json={report}",
        "-q",
        "-p",
        "no:cacheprovider",
        *(str(SUITE / f"{m}.py") for m in MODULES),
    ]
    run = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    clauses = json.loads(report.read_text())["clauses"]
    got = {c["id"]: " ".join(filter(None, [c["verdict"], c["variant"]])) for c in clauses}
    for cid, verdict in EXPECTED.items():
        assert got.get(cid) == verdict, f"{cid}: the guide says {verdict}, the suite {got.get(cid)}"
    others = {cid: v for cid, v in got.items() if cid not in EXPECTED and v != "CONFORMS"}
    assert not others, f"clauses the guide does not list must conform: {others}"
