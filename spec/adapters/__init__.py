"""Adapters shipped with the suite: the reference implementation and ``torch.nn``."""
