"""Benchmark the reference Transformer against ``torch.nn.Transformer``, in one run.

``python benchmarks/bench.py`` (or ``nox -s bench``) prints tables and writes JSON
(``build/bench/bench.json``). What it measures, on one device (``--device cpu|cuda``):

* **Training step** (forward, label-smoothed loss, backward, Adam step, learning-rate schedule)
  and **inference** (the full forward pass in evaluation mode under ``torch.inference_mode``)
  of the reference and of ``torch.nn.Transformer``, in tokens per second (source plus target
  tokens, padding excluded), at each size of ``--sizes``. The torch.nn model is what a user
  would build instead: ``nn.Transformer(batch_first=True)``, post-norm, ReLU, the same d_model,
  h, d_ff, N and dropout, with encoder and decoder stacks built without the final LayerNorm the
  paper does not have, wrapped with the reference's own embeddings, positional encoding and
  output projection (copies of them). The reference's weights are copied into it; before
  anything is timed both models run the same batch and the benchmark refuses to report if
  their logits, loss or gradients differ beyond a tolerance. torch.nn's attention projections
  have biases (it cannot drop them without also dropping the FFN and LayerNorm biases): they
  are set to zero. Both run in the same process, with the same threads and inputs, after
  warm-up, alternating, and the ratio is the median of the per-round ratios.
* **Peak memory** of the training step, beside its time (what is measured is printed).
* **Greedy decoding** with the reference's key/value cache and without it (recomputing the
  whole prefix at each step), and torch.nn's decoding (it has no cache: recomputation), at
  output lengths ``--decode-lengths``; the end-of-sentence token is never chosen, so every
  run produces exactly that many tokens.
* **The conformance suite's wall time** (``python -m spec -q -p no:cacheprovider`` in a
  subprocess).
* On CUDA, **model FLOPs utilisation** (MFU) of a training step of ``--mfu-sizes`` (base and
  big) under ``torch.autocast`` bfloat16: :func:`.mfu.train_step_flops` / time / the device's
  peak dense bfloat16 rate (:data:`.mfu.PEAK_BF16`, or ``--peak-tflops``).

``--quick`` runs tiny models for a few seconds (the project's tests use it).

The package, one module per concern; each imports only modules listed after it (and
:data:`ROOT` from here), so there are no import cycles:

* :mod:`.cli`: the command line (options, the parts to run, the report written as JSON and
  Markdown); ``benchmarks/bench.py`` and ``python -m benchmarks.refbench`` call its ``main``.
* The parts, one module each (:data:`.cli.PARTS`): :mod:`.models` (training step and
  inference, after the agreement check), :mod:`.decoding`, :mod:`.suite` and :mod:`.mfu`.
* :mod:`.report`: the environment of a run, and the tables.
* What the parts share: :mod:`.torch_nn` (the torch.nn model), :mod:`.workloads` (sizes,
  batches, the training step), :mod:`.timing` and :mod:`.memory`.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The checkout: the suite runs there, and results go to its ``build/bench/``."""
