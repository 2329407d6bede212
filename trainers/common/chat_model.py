"""The process behind a chat session: holds a finished task's model (and its base) on one device and answers
requests over a local (Unix) socket the agent listens on, one JSON object a line each way:

    -> {"question": str, "passages": [str], "model": "tuned"|"base", "max_new_tokens": int}
    <- {"token": str} ... then {"done": str}                  (a causal LM: tokens as they are generated)
    <- {"done": "", "ranking": [[index, score], ...]}        (an embedding model: passages best first)
    <- {"error": str}                                         (this request failed; the session goes on)
Each answer line carries the request's "id" when it had one.

It connects at once, then says {"ready": true, "load_seconds": s} once the models are loaded (or {"error": ...} and
exits 1). A socket rather than stdin/stdout, so that the agent can fork it from its warm trainer pool (torch and
transformers already imported: the open takes the load alone), whose jobs write their output to files. The agent
starts it with CUDA_VISIBLE_DEVICES set to the session's device and ends it on close; it also ends when the socket
closes.

    python -m trainers.common.chat_model --socket PATH --kind lm|embedding --base MODEL --tuned DIR
                                         [--max-length N] [--query-instruction TEXT] [--workspace DIR]

The prompt is the one the task trained on: trainers.common.rag_prompt through the same PromptFitter (passages
trimmed to fit max_length minus the answer's room), rendered by the tokenizer's chat template.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from pathlib import Path

from trainers.common.task_models import ADAPTER_CONFIG

# The task types whose model can be chatted with (a causal LM) or asked to rank passages (embedding).
LM_TYPES = frozenset({"sft", "dpo", "kbalign"})
CHAT_TYPES = LM_TYPES | {"embedding"}


# The id of the request being answered, echoed on each of its lines (the agent skips lines of an answer whose
# reader went away).
_answering: dict = {}
_channel: dict = {}  # "out": the socket's writer


def _say(obj: dict) -> None:
    out = _channel["out"]
    out.write(json.dumps({**obj, **_answering}, ensure_ascii=False) + "\n")
    out.flush()


def _device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class CausalChat:
    """Base + tuned causal LM: a LoRA adapter on its base (the base answers with the adapter disabled: one copy), or
    a fully fine-tuned model beside its base."""

    def __init__(self, base: str, tuned: Path, max_length: int, workspace: Path | None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from trainers.common.model_loading import load_causal_lm, load_tokenizer

        self.device = _device()
        dtype = torch.float32
        if self.device == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        # The tokenizer the task trained with (its chat template, pad token), else its base's.
        has_tokenizer = any((tuned / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))
        self.tokenizer = AutoTokenizer.from_pretrained(str(tuned)) if has_tokenizer else load_tokenizer(base, workspace)
        if not getattr(self.tokenizer, "chat_template", None):
            from trainers.common.model_loading import DEFAULT_CHAT_TEMPLATE

            self.tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
        base_model, _ = load_causal_lm(base, workspace, tokenizer=self.tokenizer, dtype=dtype)
        self.peft = (tuned / ADAPTER_CONFIG).is_file()
        if self.peft:
            from peft import PeftModel

            self.tuned = PeftModel.from_pretrained(base_model, str(tuned)).to(self.device).eval()
            self.base = None
        else:
            self.tuned = AutoModelForCausalLM.from_pretrained(str(tuned), dtype=dtype).to(self.device).eval()
            self.base = base_model.to(self.device).eval()
        self.max_length = max_length

    def answer(self, request: dict) -> None:
        import contextlib

        import torch
        from transformers import TextIteratorStreamer

        from trainers.common.prompt_fit import PromptFitter

        max_new = int(request["max_new_tokens"])
        room = max(16, self.max_length - max_new)
        prompt = PromptFitter(self.tokenizer, room).fit(request["question"], request.get("passages") or [], []).prompt
        text = self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        inputs = self.tokenizer(text, add_special_tokens=False, return_tensors="pt").to(self.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        use_base = request.get("model") == "base"
        model = self.tuned if not use_base or self.peft else self.base
        errors: list[BaseException] = []

        def generate() -> None:
            # The base of a LoRA task answers with the adapter switched off.
            switch = self.tuned.disable_adapter() if use_base and self.peft else contextlib.nullcontext()
            try:
                with switch, torch.inference_mode():
                    model.generate(**inputs, streamer=streamer, max_new_tokens=max_new, do_sample=False,
                                   pad_token_id=self.tokenizer.pad_token_id)
            except BaseException as exc:  # reported after the stream ends
                errors.append(exc)
                streamer.end()

        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        pieces = []
        for piece in streamer:
            if piece:
                pieces.append(piece)
                _say({"token": piece})
        worker.join()
        if errors:
            raise errors[0]
        _say({"done": "".join(pieces)})


class EmbeddingRanker:
    """Base and tuned sentence-transformers models: passages ranked by cosine similarity to the query."""

    def __init__(self, base: str, tuned: Path, query_instruction: str | None, workspace: Path | None):
        from sentence_transformers import SentenceTransformer

        from trainers.embedding.train import load_sentence_transformer

        device = _device()
        # The tuned model is the agent's fetched copy (its cache, not a path a config may name): loaded as it is.
        self.models = {"base": load_sentence_transformer(base, workspace, device=device),
                       "tuned": SentenceTransformer(str(tuned), device=device)}
        self.query_instruction = query_instruction

    def answer(self, request: dict) -> None:
        from sentence_transformers.util import cos_sim

        from trainers.embedding.data import with_instruction

        passages = request.get("passages") or []
        if not passages:
            _say({"done": "", "ranking": []})
            return
        model = self.models["base" if request.get("model") == "base" else "tuned"]
        query = model.encode([with_instruction(request["question"], self.query_instruction)], convert_to_tensor=True,
                             normalize_embeddings=True)
        docs = model.encode(passages, convert_to_tensor=True, normalize_embeddings=True)
        scores = cos_sim(query, docs)[0].tolist()
        ranking = sorted(enumerate(scores), key=lambda item: -item[1])
        _say({"done": "", "ranking": [[index, float(score)] for index, score in ranking]})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainers.common.chat_model")
    parser.add_argument("--socket", required=True, help="the agent's Unix socket for this session")
    parser.add_argument("--kind", choices=("lm", "embedding"), required=True)
    parser.add_argument("--base", required=True)
    parser.add_argument("--tuned", required=True)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--query-instruction", default="")
    parser.add_argument("--workspace", default="")
    args = parser.parse_args(argv)
    workspace = Path(args.workspace) if args.workspace else None
    started = time.monotonic()
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    channel.connect(args.socket)
    requests = channel.makefile("r", encoding="utf-8")
    _channel["out"] = channel.makefile("w", encoding="utf-8")
    try:
        if args.kind == "lm":
            session = CausalChat(args.base, Path(args.tuned), args.max_length, workspace)
        else:
            session = EmbeddingRanker(args.base, Path(args.tuned), args.query_instruction or None, workspace)
    except Exception as exc:  # the agent relays it as the open's error
        _say({"error": f"the model could not be loaded: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"})
        return 1
    _say({"ready": True, "load_seconds": round(time.monotonic() - started, 3)})
    for line in requests:  # until the agent closes the session
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            _answering.clear()
            if "id" in request:
                _answering["id"] = request["id"]
            session.answer(request)
        except Exception as exc:
            _say({"error": f"{type(exc).__name__}: {exc}"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
