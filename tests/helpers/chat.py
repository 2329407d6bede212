"""Reading a chat answer (`POST /api/finetune/tasks/{id}/chat`, server-sent events) for tests and benchmarks."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import httpx


@dataclass
class ChatAnswer:
    status: int
    events: list[tuple[str, dict]] = field(default_factory=list)  # (event name, its JSON data), pings left out
    error: dict | None = None  # the error body of a non-200 answer
    first_event_seconds: float | None = None  # from sending the request to the first token (or done) event

    @property
    def tokens(self) -> list[str]:
        return [data["text"] for name, data in self.events if name == "token"]

    @property
    def done(self) -> dict | None:
        return next((data for name, data in self.events if name == "done"), None)


def ask(api: httpx.Client, task_id: str, body: dict, timeout: float = 600) -> ChatAnswer:
    started = time.monotonic()
    with api.stream("POST", f"/api/finetune/tasks/{task_id}/chat", json=body, timeout=timeout) as response:
        if response.status_code != 200:
            response.read()
            return ChatAnswer(response.status_code, error=response.json()["error"])
        assert response.headers["content-type"].startswith("text/event-stream"), response.headers
        answer = ChatAnswer(200)
        name, data = "message", []
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line[len("event:"):].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:"):].strip())
            elif line == "" and data:
                if answer.first_event_seconds is None:
                    answer.first_event_seconds = time.monotonic() - started
                answer.events.append((name, json.loads("\n".join(data))))
                name, data = "message", []
        return answer
