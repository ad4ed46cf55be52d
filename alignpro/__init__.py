"""alignpro: align a frozen LLM by optimising the prompt (Align-Pro, Trivedi et al., AAAI 2025)."""

__version__ = "0.1.0"
