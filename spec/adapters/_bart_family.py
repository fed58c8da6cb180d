"""What the BART-family adapters (``hf-marian``, ``hf-bart``) share on top of
:class:`~spec.adapters._hf.TransformersAdapter`.

BART and Marian share nearly all their modelling code in transformers (each file has its own
copy of the classes and functions): the attention functions and module, the layers, the masks of
``masking_utils`` and the ``EncoderDecoderCache``. :class:`BartFamilyAdapter` maps them once, and
each adapter module gives its library's own functions in a :class:`BartFamily`.

Imported by those two adapter modules after their own guard, which names the extra when
transformers is missing.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from spec.adapter import Config
from spec.adapters._hf import (
    Model,
    TransformersAdapter,
    generator_layout,
    library_mask,
    stack_input,
)
from spec.adapters.layout import Layout, Slot

__all__ = ["BartFamily", "BartFamilyAdapter"]


@dataclasses.dataclass(frozen=True)
class BartFamily:
    """The functions of a BART-family modelling file that :class:`BartFamilyAdapter` calls
    (each file has its own copy, so each adapter calls its library's)."""

    config: Callable[[Config], Any]
    """The suite's configuration -> the library's config (``MarianConfig``, ``BartConfig``)."""
    eager_attention: Callable[..., tuple[Tensor, Tensor | None]]
    """The file's ``eager_attention_forward``."""
    shift_tokens_right: Callable[[Tensor, int, int], Tensor]
    """The file's ``shift_tokens_right(input_ids, pad_token_id, decoder_start_token_id)``."""


class BartFamilyAdapter(TransformersAdapter):
    """What the BART-family adapters (Marian, BART) map alike: attention through
    ``ALL_ATTENTION_FUNCTIONS`` on a one-head call as the attention module makes it, the
    attention module with the model's attention implementation, the stacks run layer by layer
    with the library's ``masking_utils`` masks and ``EncoderDecoderCache``, and
    ``lm_head(y) + final_logits_bias``. A subclass gives :attr:`family`."""

    family: ClassVar[BartFamily]

    @functools.cached_property
    def _implementation(self) -> str:
        """The attention implementation the model class selects by default (read off a tiny
        model), so that a standalone attention module computes as the model's modules do."""
        config = self.family.config(Config(d_model=4, h=1, d_ff=4, n_layers=1))
        return str(self.model_class(config).config._attn_implementation)

    @functools.cached_property
    def _flags(self) -> nn.Module:
        """A non-causal attention module in evaluation mode: what the library's attention
        functions read off their ``module`` argument (``is_causal``, ``training``)."""
        config = self.family.config(Config(d_model=1, h=1))
        module: nn.Module = self.attention_class(1, 1, config=config).eval()
        return module

    # -- 3.2.1 -----------------------------------------------------------------------------
    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """The library's attention function of the model's default implementation, called as
        the attention module's ``forward`` calls it (a non-causal attention module as
        ``module``, ``scaling = head_dim**-0.5``), on one head ``[B, 1, L, d]``."""
        implementation = self._implementation
        function = ALL_ATTENTION_FUNCTIONS.get_interface(implementation,
                                                         self.family.eager_attention)
        return self._attend(function, implementation, q, k, v, mask)[0]

    def attention_weights(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """The weights ``eager_attention_forward`` returns (the only implementation that returns
        them: what ``output_attentions=True`` gives with ``attn_implementation="eager"``)."""
        weights = self._attend(self.family.eager_attention, "eager", q, k, v, mask)[1]
        if weights is None:
            raise RuntimeError("eager_attention_forward returned no attention weights")
        return weights[:, 0]

    def _attend(self, function: Callable[..., tuple[Tensor, Tensor | None]], implementation: str,
                q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None
                ) -> tuple[Tensor, Tensor | None]:
        module = self._flags
        library = None if mask is None else library_mask(mask, implementation, q.dtype)
        out, weights = function(module, q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1),
                                library, dropout=0.0, scaling=q.size(-1) ** -0.5)
        return out[:, :, 0], weights  # out: [B, L, 1 head, d_v]

    # -- 3.2.2 -----------------------------------------------------------------------------
    def multi_head(self, d_model: int, h: int) -> nn.Module:
        """The attention module ``(d_model, h)`` with the library's defaults (``bias=True``, no
        dropout) and the attention implementation the model uses."""
        config = self.family.config(Config(d_model=d_model, h=h))
        config._attn_implementation = self._implementation
        module: nn.Module = self.attention_class(d_model, h, config=config)
        return module

    def multi_head_forward(
        self, module: nn.Module, x: Tensor, memory: Tensor | None, mask: Tensor | None
    ) -> Tensor:
        """``module(x, key_value_states=memory, attention_mask=...)`` (cross-attention when
        ``memory`` is given), the mask in the library's 4-D form."""
        assert isinstance(module, self.attention_class)
        library = None
        if mask is not None:
            library = library_mask(mask.to(x.device), module.config._attn_implementation,
                                   x.dtype)
        out: Tensor = module(x, key_value_states=memory, attention_mask=library)[0]
        return out

    # -- the model -------------------------------------------------------------------------
    def model(self, config: Config) -> nn.Module:
        """The model class built from the library's config with random weights (see the
        adapter module's docstring for the settings)."""
        model: nn.Module = self.model_class(self.family.config(config))
        return model

    def _embedding_layout(self, model: Model) -> Layout:
        """The token embeddings, then :func:`generator_layout`."""
        return {
            "src_embedding": Slot("model.encoder.embed_tokens.weight"),
            "tgt_embedding": Slot("model.decoder.embed_tokens.weight"),
            **generator_layout(),
        }

    def embed_source(self, model: Model, src: Tensor) -> Tensor:
        """What the encoder's ``forward`` feeds its first layer (see the adapter module's
        docstring for the recipe)."""
        return stack_input(model.model.encoder, input_ids=src)

    def embed_target(self, model: Model, tgt: Tensor) -> Tensor:
        """What the decoder's ``forward`` feeds its first layer (same recipe, no cache)."""
        return stack_input(model.model.decoder, input_ids=tgt, use_cache=False)

    def encode(self, model: Model, x: Tensor, src_mask: Tensor) -> Tensor:
        """The rest of the encoder's ``forward``: ``create_bidirectional_mask`` from the padding
        mask, then each encoder layer (layerdrop is 0)."""
        encoder = model.model.encoder
        mask = create_bidirectional_mask(config=encoder.config, inputs_embeds=x,
                                         attention_mask=src_mask)
        for layer in encoder.layers:
            x = layer(x, mask)
        return x

    def decode(self, model: Model, y: Tensor, memory: Tensor, src_mask: Tensor) -> Tensor:
        """The rest of the decoder's ``forward`` without a cache: the library's causal mask and
        cross-attention padding mask, then each decoder layer."""
        return self._decode(model, y, memory, src_mask, None)

    def decode_incremental(self, model: Model, y: Tensor, memory: Tensor, src_mask: Tensor
                           ) -> Tensor:
        """``decode`` one position at a time with the library's ``EncoderDecoderCache`` (each
        layer appends its keys and values; cross-attention keys are computed once)."""
        config = model.model.decoder.config
        cache = EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))
        steps = [self._decode(model, y[:, t : t + 1], memory, src_mask, cache)
                 for t in range(y.size(1))]
        return torch.cat(steps, dim=1)

    def _decode(self, model: Model, y: Tensor, memory: Tensor, src_mask: Tensor,
                cache: EncoderDecoderCache | None) -> Tensor:
        decoder = model.model.decoder
        past = 0 if cache is None else cache.get_seq_length()
        causal = create_causal_mask(
            config=decoder.config, inputs_embeds=y,
            attention_mask=torch.ones(y.size(0), past + y.size(1), device=y.device),
            past_key_values=None if cache is None else cache.self_attention_cache)
        cross = create_bidirectional_mask(config=decoder.config, inputs_embeds=y,
                                          attention_mask=src_mask, encoder_hidden_states=memory)
        for layer in decoder.layers:
            y = layer(y, causal, memory, encoder_attention_mask=cross, past_key_values=cache,
                      use_cache=cache is not None)
        return y

    def project(self, model: Model, y: Tensor) -> Tensor:
        """``lm_head(y) + final_logits_bias``, as the model's ``forward`` computes the
        logits."""
        logits: Tensor = model.lm_head(y) + model.final_logits_bias
        return logits

    def decoder_input(self, tgt: Tensor, bos_id: int) -> Tensor:
        """``shift_tokens_right(tgt, pad, bos_id)`` (the pad id only replaces -100 labels)."""
        return self.family.shift_tokens_right(tgt, Config.pad_id, bos_id)
