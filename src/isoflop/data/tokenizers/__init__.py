"""Tokenizers from raw bytes to compressed text; all lossless, all measured in bytes per token."""

from isoflop.data.tokenizers.base import Tokenizer, load_saved_tokenizer

__all__ = ["Tokenizer", "load_saved_tokenizer"]
