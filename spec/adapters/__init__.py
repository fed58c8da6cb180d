"""Adapters shipped with the suite (``spec.adapter.SHIPPED``): the reference implementation,
``torch.nn``, and Hugging Face transformers' ``MarianMTModel`` (``hf-marian``, extra
``matrix``)."""
