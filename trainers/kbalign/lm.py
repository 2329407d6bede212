"""The model-side helpers of KBAlign: batched chat generation, mean-pooled embeddings from the model's own hidden
states, and grouping chunks by KMeans on them. Imports torch: training code path only."""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch


@contextmanager
def _tokenizer_sides(tokenizer, padding: str, truncation: str):
    old = tokenizer.padding_side, tokenizer.truncation_side
    tokenizer.padding_side, tokenizer.truncation_side = padding, truncation
    try:
        yield
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = old


@contextmanager
def _eval_mode(model):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


def chat_prompt_text(tokenizer, messages: list[dict[str, str]], prefill: str = "") -> str:
    """The prompt as the model sees it at generation time, with the start of the assistant reply forced."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefill


def generate(
    model,
    tokenizer,
    conversations: list[list[dict[str, str]]],
    *,
    prefills: list[str] | str = "",
    max_new_tokens: int,
    max_prompt_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """The model's continuation of each conversation (after the prefill), decoded without special tokens.

    Prompts are left-padded for batching and cut from the left to `max_prompt_tokens` (the callers keep prompts
    short enough; cutting is the last resort)."""
    if isinstance(prefills, str):
        prefills = [prefills] * len(conversations)
    texts = [chat_prompt_text(tokenizer, c, p) for c, p in zip(conversations, prefills)]
    kwargs = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "pad_token_id": tokenizer.pad_token_id,
              "eos_token_id": tokenizer.eos_token_id}
    if do_sample:
        kwargs.update(temperature=temperature, top_p=top_p)
    else:  # a model's generation_config may carry sampling values; greedy ignores them, say so explicitly
        kwargs.update(temperature=None, top_p=None, top_k=None)
    outputs: list[str] = []
    with _tokenizer_sides(tokenizer, "left", "left"), _eval_mode(model), torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True, truncation=True,
                              max_length=max_prompt_tokens, add_special_tokens=False)
            batch = {k: v.to(model.device) for k, v in batch.items()}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                out = model.generate(**batch, **kwargs)
            outputs += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            if on_batch is not None:
                on_batch(len(outputs))
    return outputs


def embed(model, tokenizer, texts: list[str], *, max_length: int, batch_size: int = 8,
          on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """L2-normalised mean of the last hidden layer over each text's tokens (the model's own embedding of it)."""
    rows: list[np.ndarray] = []
    with _tokenizer_sides(tokenizer, "right", "right"), _eval_mode(model), torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True, truncation=True,
                              max_length=max_length)
            batch = {k: v.to(model.device) for k, v in batch.items()}
            hidden = model(**batch, output_hidden_states=True).hidden_states[-1].float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            rows.append(pooled.cpu().numpy())
            if on_batch is not None:
                on_batch(min(len(texts), start + batch_size))
    return np.concatenate(rows, axis=0) if rows else np.zeros((0, 1), dtype=np.float32)


def group_by_clusters(embeddings: np.ndarray, group_size: int, seed: int) -> tuple[list[list[int]], list[int]]:
    """(groups of chunk indices, cluster label of each chunk).

    KMeans puts the chunks into ceil(n / group_size) clusters; each cluster, ordered by distance to its centre, is
    cut into groups of `group_size`. A group left with a single chunk is filled up with that chunk's nearest
    neighbours (cosine) from the whole knowledge base, so every group relates at least two chunks."""
    from sklearn.cluster import KMeans

    n = len(embeddings)
    if n < 2:
        return [], [0] * n
    k = min(n, max(1, math.ceil(n / group_size)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. fewer distinct points than clusters in a tiny knowledge base
        kmeans = KMeans(n_clusters=k, random_state=seed, n_init=10).fit(embeddings)
    labels = [int(label) for label in kmeans.labels_]
    groups: list[list[int]] = []
    for cluster in range(k):
        members = [i for i in range(n) if labels[i] == cluster]
        members.sort(key=lambda i: float(np.linalg.norm(embeddings[i] - kmeans.cluster_centers_[cluster])))
        groups += [members[j:j + group_size] for j in range(0, len(members), group_size)]
    similarity = embeddings @ embeddings.T
    fill_to = min(group_size, n)
    for group in groups:
        if len(group) < 2:
            for j in np.argsort(-similarity[group[0]], kind="stable"):
                if len(group) >= fill_to:
                    break
                if int(j) not in group:
                    group.append(int(j))
    return groups, labels


def trim_to_tokens(tokenizer, text: str, max_tokens: int) -> str:
    """`text` cut to at most `max_tokens` tokens (decoded back to text)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    return tokenizer.decode(ids[:max(0, max_tokens)], skip_special_tokens=True).strip()


def fit_passages(tokenizer, passages: list[str], budget_tokens: int) -> list[str]:
    """Passages cut so that together they take about `budget_tokens` tokens at most (an equal share each)."""
    if not passages:
        return passages
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in passages]
    if sum(lengths) <= budget_tokens:
        return passages
    share = max(8, budget_tokens // len(passages))
    return [p if n <= share else trim_to_tokens(tokenizer, p, share) for p, n in zip(passages, lengths)]
