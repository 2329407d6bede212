"""Models the tests build on the spot (no model hub here): a tiny Llama with a BPE tokenizer trained in-process,
and learnable SFT rows for it."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
VOCAB_SIZE = 512

# The words the SFT rows and the default chat template use, so they become whole tokens.
_TOPIC_WORDS = ["apple", "sky", "grass", "snow", "sun", "coal", "lemon", "cherry", "ocean", "cloud"]
_COLOURS = ["red", "blue", "green", "white", "yellow", "black", "yellow", "red", "blue", "white"]
_TEMPLATE_TEXT = "<|system|>\n<|user|>\n<|assistant|>\nPassages:\nQuestion: [1] [2] the answer is what colour is"


def _corpus(seed: int = 0) -> list[str]:
    """Enough distinct pseudo-words that BPE actually reaches VOCAB_SIZE (a tiny corpus would stop short)."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "tu", "ra", "si", "po", "de", "ga", "vi", "zu", "he", "bo", "fa", "wy"]
    words = ["".join(p) for p in itertools.product(syllables, repeat=2)]
    lines = []
    for _ in range(400):
        lines.append(" ".join(rng.choice(words) for _ in range(12)))
    # Repeated so the words the tests train on get merged into whole tokens first.
    for _ in range(50):
        for topic, colour in zip(_TOPIC_WORDS, _COLOURS):
            lines.append(f"What colour is the {topic}? The {topic} is {colour}.")
        lines.append(_TEMPLATE_TEXT)
    return lines


def build_tiny_llama(out_dir: Path) -> Path:
    """Trains a byte-level BPE tokenizer and saves it with a randomly initialised 2-layer Llama into `out_dir`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>")
    tokenizer.save_pretrained(out_dir)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
        initializer_range=0.2,  # larger random weights than the default: a LoRA on it learns in a few dozen steps
    )
    LlamaForCausalLM(config).save_pretrained(out_dir)
    return out_dir


def sft_rows(n: int) -> list[dict]:
    """Seed-format rows with one fixed answer pattern per topic: an LM learns them within a few dozen steps."""
    rows = []
    for i in range(n):
        topic, colour = _TOPIC_WORDS[i % len(_TOPIC_WORDS)], _COLOURS[i % len(_COLOURS)]
        row = {
            "query": f"What colour is the {topic}?",
            "chosen": {"text": f"The {topic} is {colour}."},
            "rejected": {"text": f"The {topic} is purple."},
        }
        if i % 2:
            row["retrieval_result"] = [f"The {topic} is {colour}.", "The sky is blue."]
        rows.append(row)
    return rows


def write_sft_rows(path: Path, n: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in sft_rows(n)), encoding="utf-8")
    return path
