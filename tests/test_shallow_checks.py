"""The agent's submit-time checks in warm worker processes (gpu_agent.shallow_checks): the trainer's rules for the
owner the request names, and a check past its deadline killed with its worker."""

from __future__ import annotations

import json

import pytest

from gpu_agent.shallow_checks import CheckCrashed, ShallowChecks
from tests.helpers.tiny_models import write_sft_rows


@pytest.fixture
def workspace(tmp_path, tiny_llama_dir):
    write_sft_rows(tmp_path / "data" / "train.jsonl", 8)
    with (tmp_path / "data" / "bad.jsonl").open("w") as handle:
        handle.write(json.dumps({"query": "q", "chosen": {"text": "a"}}) + "\n")
        handle.write(json.dumps({"query": "q", "chosen": {}}) + "\n")
    return tmp_path


def config(data: str, model) -> str:
    return json.dumps({"model_name_or_path": str(model), "train_data_path": data})


async def test_a_check_reads_the_rows_for_the_owner_it_is_given(workspace, tiny_llama_dir):
    checks = ShallowChecks(workspace, workers=1)
    try:
        scope = {"BUGAGARIC_TASK_OWNER": "alice", "BUGAGARIC_PATH_SCOPE": "user"}
        good = await checks.check("sft", config("data/train.jsonl", tiny_llama_dir), scope)
        assert good["ok"] and good["rows"] == 8
        bad = await checks.check("sft", config("data/bad.jsonl", tiny_llama_dir), scope)
        assert not bad["ok"] and bad["problems"][0]["line"] == 2 and bad["problems"][0]["field"] == "chosen.text"
        outside = await checks.check("sft", config("/etc/passwd", tiny_llama_dir), scope)
        assert not outside["ok"] and outside["error"]["field"] == "train_data_path"
        broken = await checks.check("sft", "{not json", scope)
        assert not broken["ok"] and broken["error"]["field"] == "config"
    finally:
        checks.close()


async def test_a_check_past_its_deadline_is_a_crash_not_an_answer(workspace, tiny_llama_dir):
    row = json.dumps({"query": "q", "chosen": {"text": "a"}}) + "\n"
    (workspace / "data" / "big.jsonl").write_text(row * 300_000)  # seconds to read; the deadline is a tenth of one
    checks = ShallowChecks(workspace, workers=1, timeout_seconds=0.1)
    try:
        with pytest.raises(CheckCrashed, match="took longer"):
            await checks.check("sft", config("data/big.jsonl", tiny_llama_dir), {})
    finally:
        checks.close()
