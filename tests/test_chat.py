"""Chat with a finished task's model, against the real stack (control plane, one agent with one device, gateway) and
a tiny SFT task: REST (SSE) and gRPC stream tokens then `done` with their concatenation; the session holds the device
like a task (a task submitted meanwhile waits) and frees it after BUGAGARIC_CHAT_IDLE_SECONDS unused, or on DELETE;
bad input is a 400 naming the field, another state 409, no free device 503; an export answers as its source task.
Prints the time from the first POST ("open chat") to the first streamed token."""

from __future__ import annotations

import time

import grpc
import httpx
import pytest

from protos import control_plane_pb2, control_plane_pb2_grpc
from tests.helpers.chat import ask
from tests.helpers.tasks import ENDED, tiny_sft_config, train_until_published, wait_for_task, wait_until_published

IDLE_SECONDS = 4.0
QUESTION = {"question": "What colour is the apple?", "passages": ["The apple is red.", "The sky is blue."],
            "max_new_tokens": 24}


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    from tests.helpers.embedding_data import write_embedding_rows
    from tests.helpers.stack import start_stack
    from tests.helpers.tiny_bert import build_tiny_bert
    from tests.helpers.tiny_models import build_tiny_llama, write_sft_rows

    workspace = tmp_path_factory.mktemp("chat")
    build_tiny_llama(workspace / "models" / "tiny-llama")  # before the stack: the agent reports it when registering
    build_tiny_bert(workspace / "models" / "tiny-bert")
    write_sft_rows(workspace / "data" / "train.jsonl", 32)
    write_embedding_rows(workspace / "data" / "embedding.jsonl", 80)
    stack = start_stack(workspace, slots=1, extra_env={"BUGAGARIC_CHAT_IDLE_SECONDS": str(IDLE_SECONDS)})
    api = httpx.Client(base_url=stack.base_url, headers={"authorization": f"Bearer {stack.admin_token}"}, timeout=60)
    try:
        yield stack, api
    finally:
        api.close()
        stack.stop()


@pytest.fixture(scope="module")
def tuned(system):
    """A succeeded tiny SFT task whose model is published (what a chat loads)."""
    _, api = system
    return train_until_published(api, "sft", tiny_sft_config(max_steps=40, learning_rate=5e-3, max_length=64))


def _busy(api: httpx.Client) -> list[int]:
    [agent] = api.get("/api/health").json()["agents"]
    return agent["busy_devices"]


def _wait_device_free(api: httpx.Client, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while _busy(api):
        assert time.monotonic() < deadline, "the device stayed busy"
        time.sleep(0.3)


def test_rest_chat_streams_tokens_then_done_and_reuses_the_session(system, tuned):
    stack, api = system
    answer = ask(api, tuned["id"], QUESTION)
    assert answer.status == 200, answer.error
    print(f"\nchat first token after {answer.first_event_seconds:.2f}s (open chat: fetch + load + first token, "
          "tiny SFT model on CPU)")
    assert len(answer.tokens) >= 2, answer.events
    assert [name for name, _ in answer.events][-1] == "done"
    assert answer.done["text"] == "".join(answer.tokens) and answer.done["text"].strip()
    assert answer.done["model"] == "tuned"
    assert _busy(api) == [0]  # the session holds the device like a task

    again = ask(api, tuned["id"], {**QUESTION, "model": "base"})
    assert again.status == 200 and again.done["model"] == "base"
    assert again.done["text"] == "".join(again.tokens)
    print(f"chat with the session open: first token after {again.first_event_seconds:.2f}s")
    assert again.first_event_seconds < answer.first_event_seconds  # no second load
    assert stack.log("control_plane").count(f"for task {tuned['id']} open on agent") == 1


def test_grpc_chat_streams_the_same(system, tuned):
    stack, _ = system
    channel = grpc.insecure_channel(stack.control_plane_address)
    try:
        stub = control_plane_pb2_grpc.FinetuneServiceStub(channel)
        metadata = (("authorization", f"Bearer {stack.admin_token}"),)
        events = list(stub.Chat(control_plane_pb2.ChatRequest(task_id=tuned["id"], question=QUESTION["question"],
                                                               passages=QUESTION["passages"], max_new_tokens=24),
                                metadata=metadata, timeout=300))
        tokens = [e.token for e in events if e.WhichOneof("event") == "token"]
        assert len(tokens) >= 2 and events[-1].WhichOneof("event") == "done"
        assert events[-1].done.text == "".join(tokens)
        with pytest.raises(grpc.RpcError) as bad:
            list(stub.Chat(control_plane_pb2.ChatRequest(task_id=tuned["id"], question=" "), metadata=metadata))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert dict(bad.value.trailing_metadata())["bugagaric-error-field"] == "question"
    finally:
        channel.close()


@pytest.mark.parametrize("body, field", [
    ({"question": ""}, "question"),
    ({"question": "   "}, "question"),
    ({"question": "x" * 5000}, "question"),
    ({"question": "q", "passages": ["p"] * 21}, "passages"),
    ({"question": "q", "passages": [1]}, "passages"),
    ({"question": "q", "max_new_tokens": 0}, "max_new_tokens"),
    ({"question": "q", "max_new_tokens": 1025}, "max_new_tokens"),
    ({"question": "q", "model": "other"}, "model"),
    ({"question": "q", "temperature": 1}, "temperature"),
    ({"passages": []}, "question"),
])
def test_bad_chat_input_is_a_400_naming_the_field(system, tuned, body, field):
    _, api = system
    response = api.post(f"/api/finetune/tasks/{tuned['id']}/chat", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == field, response.json()


def test_unknown_or_foreign_task_is_404(system, tuned):
    stack, api = system
    assert api.post("/api/finetune/tasks/nope/chat", json={"question": "q"}).status_code == 404
    other = stack.create_user("chat-other", "chat-other-password-1")
    response = httpx.post(f"{stack.base_url}/api/finetune/tasks/{tuned['id']}/chat", json={"question": "q"},
                          headers={"authorization": f"Bearer {other}"}, timeout=30)
    assert response.status_code == 404, response.text
    response = httpx.delete(f"{stack.base_url}/api/finetune/tasks/{tuned['id']}/chat",
                            headers={"authorization": f"Bearer {other}"}, timeout=30)
    assert response.status_code == 404, response.text


def test_session_frees_its_device_after_the_idle_timeout(system, tuned):
    """The session holds the only device: a task submitted meanwhile waits in the queue, and is placed on that
    device once the session has been idle for BUGAGARIC_CHAT_IDLE_SECONDS."""
    stack, api = system
    answer = ask(api, tuned["id"], QUESTION)
    assert answer.status == 200, answer.error
    last_used = time.monotonic()
    waiting = api.post("/api/finetune/start", json={"type": "sft", "config": tiny_sft_config(max_steps=100000)})
    assert waiting.status_code == 201, waiting.text
    waiting = waiting.json()

    # While the session is open the task waits, and a task not yet succeeded cannot be chatted with.
    time.sleep(1.5)
    assert api.get(f"/api/finetune/tasks/{waiting['id']}").json()["status"] == "queued"
    assert _busy(api) == [0]
    response = api.post(f"/api/finetune/tasks/{waiting['id']}/chat", json={"question": "q"})
    assert response.status_code == 409, response.text
    assert response.json()["error"]["field"] == "task_id"

    placed = wait_for_task(api, waiting["id"], lambda t: t["status"] != "queued", timeout=IDLE_SECONDS + 30)
    idle_for = time.monotonic() - last_used
    assert placed["status"] in {"starting", "running"}, placed
    assert placed["devices"] == [0], placed
    assert idle_for >= IDLE_SECONDS, f"placed after {idle_for:.1f}s, before the idle timeout"
    assert "idle for" in stack.log("control_plane")

    # Now the task holds the device: no chat session can open.
    wait_for_task(api, waiting["id"], lambda t: t["status"] == "running")
    busy = api.post(f"/api/finetune/tasks/{tuned['id']}/chat", json=QUESTION)
    assert busy.status_code == 503, busy.text
    assert "no free device" in busy.json()["error"]["message"]
    api.delete(f"/api/finetune/tasks/{waiting['id']}")
    wait_for_task(api, waiting["id"], lambda t: t["status"] in ENDED)


def test_close_frees_the_device_at_once(system, tuned):
    stack, api = system
    _wait_device_free(api)
    answer = ask(api, tuned["id"], QUESTION)
    assert answer.status == 200, answer.error
    assert _busy(api) == [0]
    response = api.delete(f"/api/finetune/tasks/{tuned['id']}/chat")
    assert response.status_code == 200 and response.json()["closed"] is True, response.text
    assert _busy(api) == []
    assert api.delete(f"/api/finetune/tasks/{tuned['id']}/chat").json()["closed"] is False
    # The agent freed it too: a task launches there at once.
    quick = api.post("/api/finetune/start", json={"type": "sft", "config": tiny_sft_config()}).json()
    assert wait_for_task(api, quick["id"], lambda t: t["status"] in ENDED)["status"] == "succeeded"


def test_an_export_answers_as_its_source_task(system, tuned):
    """A merged export of the tiny SFT task: prompted with the source's template, its merged model gives the greedy
    answer the source's adapter gives, and its base the one the adapter switched off gives."""
    _, api = system
    _wait_device_free(api)
    source = {model: ask(api, tuned["id"], {**QUESTION, "model": model}) for model in ("tuned", "base")}
    assert all(answer.status == 200 for answer in source.values()), source
    api.delete(f"/api/finetune/tasks/{tuned['id']}/chat")  # the export task needs the only device
    exported = api.post(f"/api/finetune/tasks/{tuned['id']}/export", json={"merge_lora": True})
    assert exported.status_code == 201, exported.text
    export = wait_until_published(api, exported.json()["id"])
    for model in ("tuned", "base"):
        answer = ask(api, export["id"], {**QUESTION, "model": model})
        assert answer.status == 200, answer.error
        assert answer.done["model"] == model and answer.done["text"] == "".join(answer.tokens)
        assert answer.done["text"] == source[model].done["text"], (model, answer.done, source[model].done)
    assert source["tuned"].done["text"] != source["base"].done["text"]  # so the check above tells them apart
    assert api.delete(f"/api/finetune/tasks/{export['id']}/chat").json()["closed"] is True


def test_embedding_task_ranks_passages_with_base_and_tuned(system):
    """An embedding task's panel ranks pasted passages for a query: `done` alone, with every passage once, best
    first; the tuned model scores differently from its base."""
    from tests.helpers.embedding_data import embedding_rows, tiny_embedding_config

    _, api = system
    _wait_device_free(api)
    config = tiny_embedding_config("models/tiny-bert", "data/embedding.jsonl", output_dir=None, max_steps=10)
    task = train_until_published(api, "embedding", config)
    row = embedding_rows(80)[0]
    passages = [*row["pos"], *row["neg"]][:5]
    rankings = {}
    for model in ("tuned", "base"):
        answer = ask(api, task["id"], {"question": row["query"], "passages": passages, "model": model})
        assert answer.status == 200, answer.error
        assert [name for name, _ in answer.events] == ["done"]
        ranking = answer.done["ranking"]
        assert sorted(item["index"] for item in ranking) == list(range(len(passages)))
        scores = [item["score"] for item in ranking]
        assert scores == sorted(scores, reverse=True) and all(-1.0 <= x <= 1.0001 for x in scores)
        rankings[model] = ranking
    assert rankings["tuned"] != rankings["base"]
    assert api.delete(f"/api/finetune/tasks/{task['id']}/chat").json()["closed"] is True
