"""A tiny "instructed" model that can annotate a knowledge base the KBAlign way, built on the spot (no model hub).

A randomly initialised tiny Llama cannot annotate, so the KB-QA test first teaches one the task formats with a plain
torch loop: given a passage of facts ("The <people> live in <place>. ..."), write "Question: ...? Answer: ..." pairs
(KBAlign's short-annotation prompt, through the same chat template the trainer uses), and answer a RAG prompt from
its passage. Its facts are about invented peoples (pseudo-words) that never occur in the test's knowledge base, so it
learns to *copy* a fact from a passage but cannot know the knowledge base: closed-book it can only guess.

Copying from context needs an induction head, which a tiny model trained on the task alone forms only after ~1000
steps; a first phase on pure copying (random token sequences said twice) forms it in ~200 cheap steps.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from pathlib import Path
from typing import Any

from trainers.common.model_loading import DEFAULT_CHAT_TEMPLATE
from trainers.common.rag_prompt import build_rag_prompt
from trainers.kbalign.prompts import (
    ANSWER_PREFILL, LONG_ANSWER_PROMPT, LONG_QUESTION_REQUEST, MERGE_PROMPT, QUESTION_PREFILL, SHORT_PROMPT,
    TEACHER_REQUEST, VERIFY_REQUEST,
)

SYLLABLES = ["ka", "lo", "mi", "ne", "tu", "ra", "si", "po", "de", "ga", "vi", "zu", "he", "bo", "fa", "wy"]
PLACES = ["Neka", "Tova", "Lumi", "Rasa", "Pelo", "Dura", "Voss", "Kiro"]
FOODS = ["rice", "fish", "bread", "beans", "corn", "honey", "nuts", "figs"]
COLOURS = ["red", "blue", "green", "white", "black", "yellow", "grey", "brown"]
RELATIONS = {  # relation: (sentence, question, values)
    "live": ("The {e} live in {v}.", "Where do the {e} live?", PLACES),
    "eat": ("The {e} eat {v}.", "What do the {e} eat?", FOODS),
    "wear": ("The {e} wear {v}.", "What colour do the {e} wear?", COLOURS),
}
PAIRS_PER_CHUNK = len(RELATIONS)


def pseudo_words(seed: int) -> list[str]:
    """Every three-syllable pseudo-word in a seeded order; the KB and the annotator take disjoint slices."""
    words = ["".join(p) for p in itertools.product(SYLLABLES, repeat=3)]
    random.Random(seed).shuffle(words)
    return words


TEST_ENTITIES = pseudo_words(7)[:16]  # the knowledge base's peoples
ANNOTATOR_ENTITIES = pseudo_words(7)[16:]  # what the annotator learns on: never in the knowledge base


def facts_of(entity: str, rng: random.Random) -> list[tuple[str, str, str]]:
    """(sentence, question, answer) for each relation, in a random order. The answer is the fact's sentence: a
    tiny model learns to copy a whole sentence (induction) far sooner than to pick the value out of it."""
    out = []
    for sentence, question, values in RELATIONS.values():
        fact = sentence.format(e=entity, v=rng.choice(values))
        out.append((fact, question.format(e=entity), fact))
    rng.shuffle(out)
    return out


def knowledge_base(entities: list[str], seed: int) -> list[dict[str, Any]]:
    """One chunk per people: its three facts. Returns rows {id, text, facts: [(question, answer)]}."""
    rng = random.Random(seed)
    rows = []
    for entity in entities:
        facts = facts_of(entity, rng)
        rows.append({"id": entity, "text": " ".join(s for s, _, _ in facts), "facts": [(q, a) for _, q, a in facts]})
    return rows


def write_knowledge_base(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in rows), encoding="utf-8")
    return path


def write_eval_questions(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Chat rows {messages}: every fact of the knowledge base as a question and its reference answer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
             for r in rows for q, a in r["facts"]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- the annotator's training examples: (prompt token ids, target token ids) --------------------------------------

def _chat(tokenizer, content: str, prefill: str = "") -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True) + prefill


def _task_example(tokenizer, rng: random.Random) -> tuple[str, str]:
    """A short-range annotation of a passage (60%) or a one-passage RAG answer (40%), about an annotator entity."""
    facts = facts_of(rng.choice(ANNOTATOR_ENTITIES), rng)
    passage = " ".join(s for s, _, _ in facts)
    if rng.random() < 0.6:  # every fact of the passage as a pair, in its order
        target = "\n".join(f"{QUESTION_PREFILL} {q}\n{ANSWER_PREFILL} {a}" for _, q, a in facts)
        prompt = _chat(tokenizer, SHORT_PROMPT.format(n=PAIRS_PER_CHUNK, passage=passage), QUESTION_PREFILL)
        return prompt, target[len(QUESTION_PREFILL):]
    _, question, answer = rng.choice(facts)
    return _chat(tokenizer, build_rag_prompt(question, [passage])), answer


def _copy_example(token_ids: list[int], newline: int, rng: random.Random) -> tuple[list[int], list[int]]:
    """A random token sequence, then the same again: every target token is a copy, so the attention circuit that
    copies from context (an induction head) forms in a couple of hundred steps instead of a thousand."""
    sequence = [rng.choice(token_ids) for _ in range(rng.randint(6, 12))]
    return sequence + [newline], sequence


def _batch(pairs: list[tuple[list[int], list[int]]], pad: int):
    """Right-padded input ids, attention mask, and labels that score the targets only."""
    import torch

    width = max(len(p) + len(t) for p, t in pairs)
    ids = torch.full((len(pairs), width), pad)
    labels = torch.full((len(pairs), width), -100)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for i, (prompt, target) in enumerate(pairs):
        ids[i, :len(prompt) + len(target)] = torch.tensor(prompt + target)
        labels[i, len(prompt):len(prompt) + len(target)] = torch.tensor(target)
        mask[i, :len(prompt) + len(target)] = 1
    return ids, mask, labels


def _tokenizer_corpus() -> list[str]:
    """Every word the prompts and facts use, repeated, so they become whole tokens of a small vocabulary."""
    rng = random.Random(0)
    texts = [SHORT_PROMPT, LONG_ANSWER_PROMPT, LONG_QUESTION_REQUEST, MERGE_PROMPT, TEACHER_REQUEST, VERIFY_REQUEST,
             DEFAULT_CHAT_TEMPLATE, "<|system|>\n<|user|>\n<|assistant|>\nPassages:\n[1] [2] [3] [4] [5] [6] [7] [8]\n"
             "Question: Answer: none The student response is correct wrong because"]
    lines = texts * 40
    for _ in range(3000):
        entity = rng.choice(TEST_ENTITIES + ANNOTATOR_ENTITIES)
        lines.append(" ".join(f"{s} {q} {a}" for s, q, a in facts_of(entity, rng)))
    return lines


def build_annotator(out_dir: Path, *, copy_steps: int = 400, task_steps: int = 400, seed: int = 0,
                    lr: float = 3e-3) -> dict[str, Any]:
    """Builds the tokenizer and the model, trains it, saves both into out_dir; returns what it took.

    Two phases: copying random token sequences until the model copies (>= 90% of a batch's tokens, at most
    `copy_steps`), then `task_steps` of the task formats above."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    started = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>")
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    tokenizer.save_pretrained(out_dir)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    token_ids = list(range(len(tokenizer.all_special_tokens), len(tokenizer)))
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"][0]

    def step(pairs, rate: float):
        for group in optimizer.param_groups:
            group["lr"] = rate
        ids, mask, labels = _batch(pairs, pad)
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        return out, labels

    copied = 0.0
    n = 0
    for n in range(1, copy_steps + 1):
        out, labels = step([_copy_example(token_ids, newline, rng) for _ in range(64)], lr * min(1.0, n / 30))
        if n % 25 == 0:
            wanted = labels[:, 1:] != -100
            copied = ((out.logits[:, :-1].argmax(-1) == labels[:, 1:]) & wanted).sum().item() / wanted.sum().item()
            if copied >= 0.9:
                break
    losses = []
    for k in range(task_steps):
        pairs = []
        for _ in range(16):
            prompt, target = _task_example(tokenizer, rng)
            pairs.append((tokenizer(prompt, add_special_tokens=False)["input_ids"],
                          tokenizer(target, add_special_tokens=False)["input_ids"] + [eos]))
        out, _ = step(pairs, lr * max(0.1, 1 - k / task_steps))
        losses.append(out.loss.item())
    model.eval()
    model.save_pretrained(out_dir)
    return {"seconds": round(time.monotonic() - started, 1), "copy_steps": n, "copy_accuracy": round(copied, 3),
            "task_steps": task_steps, "final_loss": round(sum(losses[-20:]) / max(1, len(losses[-20:])), 4)}
