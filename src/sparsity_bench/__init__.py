"""sparsity_bench: one experiment runner for learning sparse neural networks."""

__version__ = "0.1.0"
