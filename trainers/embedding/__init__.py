"""Fine-tuning of retrieval embedding models (sentence-transformers) on {query, pos, neg} rows."""
