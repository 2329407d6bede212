"""Chat with a finished tiny SFT task: the time from "open chat" (the first POST .../chat: a device chosen, the
published model fetched into the agent's cache, the chat process started and base + adapter loaded) to the first
streamed token, and the same for later questions on the open session. Prints JSON.

    .venv/bin/python benchmarks/chat_first_token.py [--rounds 3] [--cold]

The agent forks the chat process from its warm trainer pool (torch, transformers and peft already imported);
`--cold` turns the pool off (BUGAGARIC_WARM_POOL_SIZE=0): every open starts a new interpreter.

Each round closes the session (DELETE .../chat) first, so every "open" figure is a cold open (the model blob is in
the agent's cache after the first round, as it is for any later chat on that agent).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from _common import running_system, submit, wait  # noqa: E402
from tests.helpers.chat import ask  # noqa: E402

QUESTION = {"question": "What colour is the apple?", "passages": ["The apple is red.", "The sky is blue."],
            "max_new_tokens": 24}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="no warm pool: the chat process starts cold")
    args = parser.parse_args()
    extra_env = {"BUGAGARIC_WARM_POOL_SIZE": "0"} if args.cold else {}
    with running_system(slots=1, extra_env=extra_env) as (_, client):
        task = submit(client, max_steps=40)
        task = wait(client, task["id"], {"succeeded", "failed", "stopped"})
        assert task["status"] == "succeeded", task
        while not client.get(f"/api/finetune/tasks/{task['id']}").json()["published_model_sha256"]:
            time.sleep(0.2)
        opens, warm, totals = [], [], []
        for _ in range(args.rounds):
            client.delete(f"/api/finetune/tasks/{task['id']}/chat")
            first = ask(client, task["id"], QUESTION)
            assert first.status == 200 and first.tokens, first
            opens.append(first.first_event_seconds)
            again = ask(client, task["id"], QUESTION)
            assert again.status == 200 and again.tokens, again
            warm.append(again.first_event_seconds)
            totals.append(len(first.tokens))
        client.delete(f"/api/finetune/tasks/{task['id']}/chat")
    print(json.dumps({
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, CPU device (tiny Llama + LoRA)",
        "chat_process": "started cold" if args.cold else "forked from the warm pool",
        "open_chat_to_first_token_s": [round(x, 3) for x in opens],
        "open_chat_to_first_token_median_s": round(statistics.median(opens), 3),
        "open_session_to_first_token_s": [round(x, 3) for x in warm],
        "open_session_to_first_token_median_s": round(statistics.median(warm), 3),
        "token_events_per_answer": totals,
    }, indent=2))


if __name__ == "__main__":
    main()
