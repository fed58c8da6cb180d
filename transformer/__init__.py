"""A reference implementation of "Attention Is All You Need" (Vaswani et al., 2017).

Every public piece names, in its docstring, the clause ids of the specification (``spec``)
that it implements.
"""

from .attention import KVCache, MultiHeadAttention, scaled_dot_product_attention
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TransformerConfig, base, big
from .decoding import beam_search, greedy_decode, length_penalty
from .embeddings import Embedding, PositionalEncoding, positional_encoding
from .layers import DecoderLayer, EncoderLayer, FeedForward, Residual
from .masks import causal_mask, padding_mask
from .model import DecoderState, Transformer, shift_right
from .training import LabelSmoothingLoss, make_optimizer, noam_rate, noam_scheduler

__all__ = [
    "CheckpointError",
    "DecoderLayer",
    "DecoderState",
    "Embedding",
    "EncoderLayer",
    "FeedForward",
    "KVCache",
    "LabelSmoothingLoss",
    "MultiHeadAttention",
    "PositionalEncoding",
    "Residual",
    "Transformer",
    "TransformerConfig",
    "base",
    "beam_search",
    "big",
    "causal_mask",
    "greedy_decode",
    "length_penalty",
    "load_checkpoint",
    "make_optimizer",
    "noam_rate",
    "noam_scheduler",
    "padding_mask",
    "positional_encoding",
    "save_checkpoint",
    "scaled_dot_product_attention",
    "shift_right",
]
