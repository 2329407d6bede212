"""Batched chat generation with the model being trained: greedy (or sampled) continuations of conversations rendered
with the tokenizer's chat template, left-padded, in the run's compute dtype. Used by KBAlign's stages and by the
predictions every LM type writes after training (trainers.common.predictions). Imports torch: training code path
only."""

from __future__ import annotations

import warnings
from contextlib import contextmanager, nullcontext
from typing import Callable

import torch


@contextmanager
def tokenizer_sides(tokenizer, padding: str, truncation: str):
    old = tokenizer.padding_side, tokenizer.truncation_side
    tokenizer.padding_side, tokenizer.truncation_side = padding, truncation
    try:
        yield
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = old


@contextmanager
def eval_mode(model):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


def autocast_for(model, dtype: torch.dtype | None):
    """Half-precision matrix products when the run trains in bf16/fp16 (a full fine-tune keeps float32 weights)."""
    if dtype is None or dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=model.device.type, dtype=dtype)


def chat_prompt_text(tokenizer, messages: list[dict[str, str]], prefill: str = "") -> str:
    """The prompt as the model sees it at generation time, with the start of the assistant reply forced."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefill


def count_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def trim_to_tokens(tokenizer, text: str, max_tokens: int) -> str:
    """`text` cut to at most `max_tokens` tokens (decoded back to text)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    return tokenizer.decode(ids[:max(0, max_tokens)], skip_special_tokens=True).strip()


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
    compute_dtype: torch.dtype | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """The model's continuation of each conversation (after its prefill), decoded without special tokens.

    Prompts are left-padded for batching and cut from the left to `max_prompt_tokens` (callers fit their prompts;
    cutting is the last resort)."""
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
    with tokenizer_sides(tokenizer, "left", "left"), eval_mode(model), torch.no_grad(), \
            autocast_for(model, compute_dtype):
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
