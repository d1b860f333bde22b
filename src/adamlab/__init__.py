"""adamlab: which optimizer and which step size to fine-tune an LLM with, and the evidence."""

__version__ = "0.1.0"
