"""Adapters shipped with the suite (``spec.adapter.SHIPPED``): the reference implementation,
``torch.nn``, and the libraries of the conformance matrix (extra ``matrix``): Hugging Face
transformers' ``MarianMTModel`` (``hf-marian``), ``FSMTForConditionalGeneration``
(``hf-fsmt``), ``BartForConditionalGeneration`` (``hf-bart``) and lucidrains' x-transformers
``XTransformer`` (``x-transformers``). :mod:`spec.adapters.layout` helps any adapter map a
library's parameters onto the canonical names."""
