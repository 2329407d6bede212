"""Direct preference optimisation of a causal LM on RAG rows: query + passages -> chosen answer over rejected."""
