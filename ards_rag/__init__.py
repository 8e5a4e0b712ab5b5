"""ards-rag: ARDS detection from ICU clinical notes with retrieval and a fine-tuned LLM."""

__version__ = "0.1.0"
