"""Supervised fine-tuning of a causal LM on RAG rows (query + passages -> chosen answer) or chat rows."""
