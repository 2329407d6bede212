"""KBAlign's model-side embeddings: mean-pooled from the tuned model's own hidden states (the fallback when no
sentence-embedding model is given). Generation is trainers.common.generation. Imports torch: training code path
only."""

from __future__ import annotations

import numpy as np
import torch

# The model contexts are shared with generation (trainers.common.generation), which KBAlign's stages use directly.
from trainers.common.generation import autocast_for, eval_mode, tokenizer_sides


def hidden_state_embeddings(model, tokenizer, texts: list[str], *, max_length: int, batch_size: int = 8,
                            compute_dtype: torch.dtype | None = None) -> np.ndarray:
    """L2-normalised mean of the last hidden layer over each text's tokens (the model's own embedding of it)."""
    rows: list[np.ndarray] = []
    with tokenizer_sides(tokenizer, "right", "right"), eval_mode(model), torch.no_grad(), \
            autocast_for(model, compute_dtype):
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True, truncation=True,
                              max_length=max_length)
            batch = {k: v.to(model.device) for k, v in batch.items()}
            hidden = model(**batch, output_hidden_states=True).hidden_states[-1].float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            rows.append(torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy())
    return np.concatenate(rows, axis=0) if rows else np.zeros((0, 1), dtype=np.float32)
