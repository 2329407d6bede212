"""GET /api/finetune/tasks pages by page token through the real gateway and control plane (no agent: tasks queue)."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers.live import LiveControlPlane, start_gateway


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    control_plane = LiveControlPlane(tmp_path_factory.mktemp("gateway-paging")).start()
    gateway = start_gateway(control_plane)
    token = httpx.post(f"{gateway.base_url}/api/auth/login",
                       json={"username": "admin", "password": control_plane.admin_password}, timeout=30).json()["token"]
    client = httpx.Client(base_url=gateway.base_url, headers={"authorization": f"Bearer {token}"}, timeout=60)
    yield client
    client.close()
    gateway.stop()
    control_plane.stop()


def test_pages_by_token_list_every_task_once_newest_first(api):
    config = {"model_name_or_path": "org/model", "train_data_path": "data/train.jsonl"}
    submitted = [api.post("/api/finetune/start", json={"type": "sft", "config": config}).json()["id"] for _ in range(5)]
    seen, token = [], None
    while True:
        body = api.get("/api/finetune/tasks", params={"limit": 2, **({"page_token": token} if token else {})}).json()
        seen += [task["id"] for task in body["tasks"]]
        assert body["total"] == 5
        token = body["next_page_token"]
        if token is None:
            break
    assert seen == submitted[::-1]
    # Offset paging, as the console does it, still works and says nothing about tokens it did not use.
    assert [t["id"] for t in api.get("/api/finetune/tasks", params={"limit": 2, "offset": 4}).json()["tasks"]] == \
        submitted[:1]
    # The queue positions shown on a page are the queue's: the oldest task is placed first.
    positions = {t["id"]: t["queue_position"] for t in api.get("/api/finetune/tasks").json()["tasks"]}
    assert [positions[task_id] for task_id in submitted] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("token", ["bm90IGEgdG9rZW4", "x", "a b", "%ED%A0%80", "A" * 300, "eyJhIjoxfQ"])
def test_a_bad_page_token_is_a_400_naming_it(api, token):
    response = api.get(f"/api/finetune/tasks?page_token={token}")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == "page_token"
