"""What the suite's test modules share, one module per purpose:

* :mod:`spec.suite.helpers.models`: models with well-conditioned random weights, their
  canonical parameters, copies of a model, shared (tied, aliased) parameters;
* :mod:`spec.suite.helpers.batches`: token batches and the passes that turn them into logits
  (for evaluation and for training);
* :mod:`spec.suite.helpers.embeddings`: what the embedding layers add, what ``project``
  returns (3.4, 3.5);
* :mod:`spec.suite.helpers.readings`: how a model reads what the paper leaves open around its
  sub-layers (:class:`Reading`);
* :mod:`spec.suite.helpers.stacks`: oracle stacks with more knobs, the known bugs of a stack,
  finding a model's reading (3.1, 3.2.2, 3.2.3, 3.3);
* :mod:`spec.suite.helpers.judging`: judging an output against the oracle and the known bugs,
  and which positions influence which;
* :mod:`spec.suite.helpers.dropout`: measuring where dropout acts and at what rate (5.4);
* :mod:`spec.suite.helpers.gradients`: which parameters and embedding rows get a gradient
  (practice/gradients).

Everything the test modules use is importable from here (``from spec.suite.helpers import
SMALL``, ``from spec.suite import helpers as H``). No module here is named ``test_*``: pytest
collects none of them.
"""

from spec.oracle import sub

from .batches import (
    Batch,
    batch_of,
    cpu_float64,
    encoder_only,
    logits,
    outputs,
    pieces,
    shifted,
    tokens,
)
from .embeddings import as_outputs, embedded, embedding_norm, normed, not_buffer, unmoved
from .judging import diagnosis, influence, judge
from .models import (
    EMBEDDING_NAMES,
    SMALL,
    aliases,
    build,
    draw_all,
    randomize,
    tied_pairs,
    twin,
)
from .readings import PAPER, READINGS, Reading, Stack, layer_norm, layers
from .stacks import (
    DECODER_ORDER,
    ENCODER_ORDER,
    LAYER_BUGS,
    build_stacks,
    decoder,
    encoder,
    match_reading,
    multi_head_bugs,
    probe,
    reading_of,
    stack_bugs,
    wrap_bugs,
)

__all__ = [
    "DECODER_ORDER",
    "EMBEDDING_NAMES",
    "ENCODER_ORDER",
    "LAYER_BUGS",
    "PAPER",
    "READINGS",
    "SMALL",
    "Batch",
    "Reading",
    "Stack",
    "aliases",
    "as_outputs",
    "batch_of",
    "build",
    "build_stacks",
    "cpu_float64",
    "decoder",
    "diagnosis",
    "draw_all",
    "embedded",
    "embedding_norm",
    "encoder",
    "encoder_only",
    "influence",
    "judge",
    "layer_norm",
    "layers",
    "logits",
    "match_reading",
    "multi_head_bugs",
    "normed",
    "not_buffer",
    "outputs",
    "pieces",
    "probe",
    "randomize",
    "reading_of",
    "shifted",
    "stack_bugs",
    "sub",
    "tied_pairs",
    "tokens",
    "twin",
    "unmoved",
    "wrap_bugs",
]
