"""Embeddings of chunks and questions, for clustering (long-range annotation) and retrieval (training prompts,
verification drafts, KB-QA evaluation): one embedder per run, so clusters and retrieval agree.

The reference code embeds with a sentence-transformers model (paraphrase-MiniLM / BGE); here that is
`embedding_model_name_or_path`. Without one, the tuned model's own last hidden layer (mean-pooled, before any
training) stands in, with a warning: a causal LM's hidden states are a much weaker retriever.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from trainers.errors import ModelNotFound
from trainers.common.model_loading import locate_named_model
from trainers.kbalign.spec import EMBEDDING_FIELD as FIELD

SENTENCE_TRANSFORMERS = "sentence-transformers"
HIDDEN_STATES = "tuned model hidden states"
NO_EMBEDDING_MODEL_WARNING = (
    f"no {FIELD}: clustering and retrieval use the tuned model's own mean-pooled hidden states, a weak retriever; "
    "give a sentence-embedding model (e.g. a local all-MiniLM-L6-v2 or BGE directory) for the reference method")


@dataclass
class Embedder:
    source: str  # SENTENCE_TRANSFORMERS or HIDDEN_STATES
    name: str
    encode: Callable[[list[str]], np.ndarray]  # L2-normalised rows

    def describe(self) -> dict[str, str]:
        return {"source": self.source, "model": self.name}


def sentence_transformer_embedder(value: str, workspace: Path | None, device: str, batch_size: int) -> Embedder:
    from sentence_transformers import SentenceTransformer

    source = locate_named_model(value, FIELD, workspace)
    try:
        model = SentenceTransformer(source, device=device)
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotFound(f"{FIELD}: {value!r} could not be loaded as a sentence-transformers model ({reason})") \
            from None

    def encode(texts: list[str]) -> np.ndarray:
        return np.asarray(model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                       convert_to_numpy=True, show_progress_bar=False), dtype=np.float32)

    return Embedder(SENTENCE_TRANSFORMERS, value, encode)


def hidden_state_embedder(model, tokenizer, name: str, max_length: int, batch_size: int, compute_dtype) -> Embedder:
    from trainers.kbalign.lm import hidden_state_embeddings

    def encode(texts: list[str]) -> np.ndarray:
        return hidden_state_embeddings(model, tokenizer, texts, max_length=max_length, batch_size=batch_size,
                                       compute_dtype=compute_dtype)

    return Embedder(HIDDEN_STATES, name, encode)


def top_k(queries: np.ndarray, documents: np.ndarray, k: int, among: list[int] | None = None) -> list[list[int]]:
    """For each query, the indices of its k most similar documents (cosine; rows are normalised), best first;
    `among` limits the candidates (e.g. a cluster's members)."""
    candidates = np.arange(len(documents)) if among is None else np.asarray(among, dtype=int)
    if len(candidates) == 0 or len(queries) == 0:
        return [[] for _ in range(len(queries))]
    scores = queries @ documents[candidates].T
    k = min(k, len(candidates))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[int(candidates[j]) for j in row] for row in order]
