"""The oracle: the paper's equations, written as literally as possible, in float64.

This is the ground truth the suite compares implementations with. It favours being obviously
right over being fast: per-head and per-layer Python loops, explicit formulas, no ``torch.nn``
modules, no fused kernels. Every function converts its tensor inputs to float64 (keeping their
device) and returns float64.

Several functions take *bug knobs* that reproduce known, common mistakes (no 1/sqrt(d_k) scale,
softmax over the wrong axis, slicing the input per head, a causal mask off by one, pre-norm,
sin/cos swapped, ...). They are never the default: the suite uses them for diagnosis, computing
each buggy output and naming the one an implementation matches (see ``spec.tolerances``).

Parameters are read from a mapping with the canonical names of ``spec.adapter`` (``W_Q``
``[h, d_model, d_k]``, ``W_O`` ``[h*d_v, d_model]``, ``W_1``, ``gamma``, ...; a whole model
prefixes them: ``encoder.0.self_attn.W_Q``). Masks are boolean, ``True`` = may attend.

The oracle has one module per paper section, named like the suite's test module for that
section (the tests of ``spec/suite/test_3_1_stacks.py`` compare with
``spec/oracle/section_3_1_stacks.py``), so that a clause's statement, its oracle and its test
are found under the same section name:

* :mod:`spec.oracle.section_3_1_stacks` (:mod:`spec.suite.test_3_1_stacks`): LayerNorm, the
  residual connection, the encoder and decoder layers and stacks;
* :mod:`spec.oracle.section_3_2_1_attention` (:mod:`spec.suite.test_3_2_1_attention`): scaled
  dot-product attention;
* :mod:`spec.oracle.section_3_2_2_multi_head` (:mod:`spec.suite.test_3_2_2_multi_head`):
  multi-head attention;
* :mod:`spec.oracle.section_3_2_3_applications` (:mod:`spec.suite.test_3_2_3_applications`):
  the causal and padding masks;
* :mod:`spec.oracle.section_3_3_ffn` (:mod:`spec.suite.test_3_3_ffn`): the feed-forward network;
* :mod:`spec.oracle.section_3_4_embeddings` (:mod:`spec.suite.test_3_4_embeddings`): embedding
  and output projection;
* :mod:`spec.oracle.section_3_5_positional` (:mod:`spec.suite.test_3_5_positional`): the
  sinusoidal positional encoding;
* :mod:`spec.oracle.section_5_training` (:mod:`spec.suite.test_5_training`): label smoothing
  and the learning-rate schedule;
* :mod:`spec.oracle.section_6_1_table3` (:mod:`spec.suite.test_6_1_table3`): beam search and
  the parameter counts.

Every public name is re-exported here: use ``from spec.oracle import multi_head`` or
``oracle.multi_head`` rather than the module that defines it.
"""

from __future__ import annotations

from ._common import Params
from .section_3_1_stacks import (
    Norm,
    decoder,
    decoder_layer,
    encoder,
    encoder_layer,
    layer_norm,
    residual,
    sub,
)
from .section_3_2_1_attention import Scale, SoftmaxAxis, attention, attention_weights
from .section_3_2_2_multi_head import MULTI_HEAD_BUGS, multi_head
from .section_3_2_3_applications import causal_mask, padding_mask
from .section_3_3_ffn import Activation, feed_forward
from .section_3_4_embeddings import embed, project
from .section_3_5_positional import positional_encoding
from .section_5_training import Spread, label_smoothed_loss, noam_lr, smoothed_targets
from .section_6_1_table3 import beam_search, length_penalty, param_count, pool_search

__all__ = [
    "MULTI_HEAD_BUGS",
    "Activation",
    "Norm",
    "Params",
    "Scale",
    "SoftmaxAxis",
    "Spread",
    "attention",
    "attention_weights",
    "beam_search",
    "causal_mask",
    "decoder",
    "decoder_layer",
    "embed",
    "encoder",
    "encoder_layer",
    "feed_forward",
    "label_smoothed_loss",
    "layer_norm",
    "length_penalty",
    "multi_head",
    "noam_lr",
    "padding_mask",
    "param_count",
    "pool_search",
    "positional_encoding",
    "project",
    "residual",
    "smoothed_targets",
    "sub",
]
