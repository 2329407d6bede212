"""Path confinement and data-file limits (trainers.paths, trainers.output_dirs), in-process on real files.

Every path a config names resolves, symlinks followed, inside the roots the operator configured; the platform's state
directory is never reachable; each task writes into a directory of its own that no other task may name; reading a
data file has size, row and time limits; no error echoes what a file holds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from trainers import paths, registry
from trainers.common.config import load_extra_args
from trainers.common.jsonl import load_rows
from trainers.common.model_loading import locate_model
from trainers.errors import ConfigError, DataError
from trainers.output_dirs import check_output_dir, check_resume_checkpoint, claim_output_dir
from trainers.preflight import check
from trainers.sft.spec import parse_row

SECRET = "s3cret-line-that-must-never-be-echoed"
ROW = {"query": "q?", "chosen": {"text": "a"}}


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A workspace with data, the platform's state directory, and a secret file outside it."""
    for name in ("BUGAGARIC_DATA_ROOTS", "BUGAGARIC_MODEL_ROOTS", "BUGAGARIC_ADMIN_PATH_ROOTS", "BUGAGARIC_OUTPUT_ROOT",
                 "BUGAGARIC_STATE_DIR", "BUGAGARIC_DATABASE_URL", "BUGAGARIC_AGENT_DIR", "BUGAGARIC_TASK_OWNER",
                 "BUGAGARIC_PATH_SCOPE", "BUGAGARIC_ADMIN_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    ws = tmp_path / "ws"
    (ws / "data").mkdir(parents=True)
    (ws / "data" / "train.jsonl").write_text(json.dumps(ROW) + "\n")
    (ws / "var").mkdir()
    (ws / "var" / "bugagaric.db").write_text("store")
    (ws / "var" / "admin_password").write_text(f"admin {SECRET}\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jsonl").write_text(f"{SECRET}\n")
    monkeypatch.setenv("BUGAGARIC_TASK_OWNER", "alice")
    return ws


def refused(call, field: str, *words: str) -> str:
    with pytest.raises(ConfigError) as info:
        call()
    assert info.value.field == field, info.value.message
    assert SECRET not in info.value.message
    for word in words:
        assert word in info.value.message, info.value.message
    return info.value.message


def test_reads_stay_inside_the_data_roots(workspace, tmp_path):
    assert paths.readable("data/train.jsonl", "train_data_path", workspace) == workspace / "data/train.jsonl"
    secret = tmp_path / "outside" / "secret.jsonl"
    for given in (str(secret), "../outside/secret.jsonl", "data/../../outside/secret.jsonl", "/etc/passwd", "~"):
        refused(lambda: paths.readable(given, "train_data_path", workspace), "train_data_path", "outside")


def test_a_symlink_out_of_the_workspace_is_refused_without_saying_where_it_points(workspace, tmp_path):
    (workspace / "data" / "link.jsonl").symlink_to(tmp_path / "outside" / "secret.jsonl")
    (workspace / "data" / "dir-link").symlink_to(tmp_path / "outside")
    message = refused(lambda: paths.readable("data/link.jsonl", "train_data_path", workspace), "train_data_path")
    assert "outside/secret" not in message and "data/link.jsonl" in message
    refused(lambda: paths.readable("data/dir-link/secret.jsonl", "f", workspace), "f")
    (workspace / "data" / "inner.jsonl").symlink_to(workspace / "data" / "train.jsonl")
    assert paths.readable("data/inner.jsonl", "f", workspace) == workspace / "data" / "train.jsonl"


def test_the_state_directory_is_never_readable_whatever_the_roots(workspace, monkeypatch, tmp_path):
    for given in ("var/bugagaric.db", "var/admin_password", "var", "data/../var/bugagaric.db"):
        refused(lambda: paths.readable(given, "train_data_path", workspace), "train_data_path")
    monkeypatch.setenv("BUGAGARIC_PATH_SCOPE", "admin")
    monkeypatch.setenv("BUGAGARIC_ADMIN_PATH_ROOTS", "/")
    refused(lambda: paths.readable("var/admin_password", "f", workspace), "f")
    # A store the operator put elsewhere is just as private.
    store = workspace / "data" / "custom.db"
    store.write_text("store")
    monkeypatch.setenv("BUGAGARIC_DATABASE_URL", f"sqlite:///{store}")
    refused(lambda: paths.readable("data/custom.db", "f", workspace), "f")
    (workspace / "data" / "custom.db-wal").write_text("wal")
    refused(lambda: paths.readable("data/custom.db-wal", "f", workspace), "f")


def test_admins_may_be_allowed_more_and_models_may_live_in_their_own_roots(workspace, monkeypatch, tmp_path):
    secret = str(tmp_path / "outside" / "secret.jsonl")
    monkeypatch.setenv("BUGAGARIC_ADMIN_PATH_ROOTS", str(tmp_path / "outside"))
    refused(lambda: paths.readable(secret, "f", workspace), "f")
    with paths.scope("root", admin=True):
        assert paths.readable(secret, "f", workspace) == Path(secret)
    models = tmp_path / "models" / "m"
    models.mkdir(parents=True)
    (models / "config.json").write_text("{}")
    refused(lambda: locate_model(str(models), workspace), "model_name_or_path", "outside")
    monkeypatch.setenv("BUGAGARIC_MODEL_ROOTS", str(tmp_path / "models"))
    assert locate_model(str(models), workspace) == str(models)
    refused(lambda: paths.readable(str(models / "config.json"), "train_data_path", workspace), "train_data_path")
    assert locate_model("some-org/some-model", workspace) == "some-org/some-model"  # a hub id is not a path


def test_data_files_must_be_regular_files_within_the_size_limit(workspace, monkeypatch):
    os.mkfifo(workspace / "data" / "fifo.jsonl")  # opening it would block forever
    (workspace / "data" / "urandom.jsonl").symlink_to("/dev/urandom")
    with pytest.raises(DataError, match="is not a regular file"):
        load_rows("data/fifo.jsonl", parse_row, field="train_data_path", workspace=workspace)
    with pytest.raises(DataError, match="outside"):
        load_rows("data/urandom.jsonl", parse_row, field="train_data_path", workspace=workspace)
    with pytest.raises(DataError, match="is a directory"):
        load_rows("data", parse_row, field="train_data_path", workspace=workspace)
    monkeypatch.setenv("BUGAGARIC_MAX_DATA_FILE_BYTES", "10")
    with pytest.raises(DataError, match=r"over the 10 bytes limit .*BUGAGARIC_MAX_DATA_FILE_BYTES"):
        load_rows("data/train.jsonl", parse_row, field="train_data_path", workspace=workspace)


def test_a_50_mb_line_is_refused_with_its_limit_and_the_rest_still_checked(workspace):
    path = workspace / "data" / "huge.jsonl"
    with path.open("w") as handle:
        handle.write(json.dumps(ROW) + "\n")
        handle.write('{"query": "' + "x" * (50 * 1024**2) + '", "chosen": {"text": "a"}}\n')
        handle.write(json.dumps(ROW) + "\n")
        handle.write('{"query": 3}\n')
    with pytest.raises(DataError) as info:
        load_rows("data/huge.jsonl", parse_row, field="train_data_path", workspace=workspace)
    assert "line 2: longer than 16777216 bytes, the limit of one row (BUGAGARIC_MAX_ROW_BYTES)" in info.value.message
    assert [p.line for p in info.value.problems] == [2, 4, 4] and info.value.rows == 4


def test_reading_has_a_time_limit(workspace, monkeypatch):
    (workspace / "data" / "long.jsonl").write_text((json.dumps(ROW) + "\n") * 3000)
    monkeypatch.setenv("BUGAGARIC_MAX_DATA_READ_SECONDS", "0")
    with pytest.raises(DataError, match=r"took longer than 0 s \(stopped at line 1024"):
        load_rows("data/long.jsonl", parse_row, field="train_data_path", workspace=workspace)


def test_parse_errors_say_where_never_what_the_file_holds(workspace):
    sft = registry.get("sft")
    (workspace / "data" / "extra.yaml").write_text(f"learning_rate: 1\n{SECRET}: [unclosed\n")
    (workspace / "data" / "extra.json").write_text('{"a": 1,\n "' + SECRET + '" 2}')
    (workspace / "data" / "rows.jsonl").write_text(f'{{"query": "{SECRET}" "chosen"}}\n')
    for name, where in (("data/extra.yaml", "line 3"), ("data/extra.json", "line 2")):
        config = sft.parse_config({"model_name_or_path": "m", "train_data_path": "data/train.jsonl", "config_file": name})
        refused(lambda: load_extra_args(config, workspace), "config_file", name, where)
    with pytest.raises(DataError) as info:
        load_rows("data/rows.jsonl", parse_row, field="train_data_path", workspace=workspace)
    assert SECRET not in info.value.message and "line 1: not valid JSON" in info.value.message


def test_config_file_cannot_move_the_output_or_read_outside(workspace, tmp_path):
    sft = registry.get("sft")

    def extras(text: str):
        (workspace / "data" / "extra.yaml").write_text(text)
        config = sft.parse_config({"model_name_or_path": "m", "train_data_path": "data/train.jsonl",
                                   "config_file": "data/extra.yaml"})
        return lambda: load_extra_args(config, workspace)

    refused(extras("output_dir: /tmp/elsewhere\n"), "config_file", "'output_dir' cannot be set here")
    refused(extras("logging_dir: /tmp/logs\npush_to_hub: true\n"), "config_file", "'logging_dir'", "'push_to_hub'")
    refused(extras(f"deepspeed: {tmp_path / 'outside' / 'secret.jsonl'}\n"), "config_file.deepspeed", "outside")
    (workspace / "data" / "ds.json").write_text("{}")
    assert extras("deepspeed: data/ds.json\n")()["deepspeed"] == str(workspace / "data" / "ds.json")
    shadow = sft.parse_config({"model_name_or_path": "m", "train_data_path": "d", "config_file": "/etc/shadow"})
    refused(lambda: load_extra_args(shadow, workspace), "config_file", "outside")


def test_every_task_writes_into_a_directory_of_its_own(workspace, tmp_path):
    for given in ("/tmp/elsewhere", "../elsewhere", "data/out", "output", "var/agent/x"):
        refused(lambda: check_output_dir(given, "t1", workspace), "output_dir", "outside the output root")
    (workspace / "output").mkdir()
    (workspace / "output" / "escape").symlink_to(tmp_path / "outside")
    refused(lambda: check_output_dir("output/escape/t1", "t1", workspace), "output_dir", "outside the output root")

    mine = claim_output_dir("output/sft/t1", "t1", workspace)
    assert json.loads((mine / paths.TASK_MARKER).read_text()) == {"task_id": "t1", "owner": "alice"}
    assert claim_output_dir("output/sft/t1", "t1", workspace) == mine  # the task's next attempt
    refused(lambda: check_output_dir("output/sft/t1", "t2", workspace), "output_dir", "is the output directory of another task")
    # As submitted: the user's directory with the new task's id appended; the message names the user's part.
    refused(lambda: check_output_dir("output/sft/t1/t2", "t2", workspace), "output_dir",
            "'output/sft/t1' is the output directory of another task")
    refused(lambda: check_output_dir("output/sft/t1/deeper/t2", "t2", workspace), "output_dir",
            "'output/sft/t1/deeper' is inside the output directory of another task")
    assert check_output_dir("output/sft/t2", "t2", workspace) == workspace / "output/sft/t2"


def test_outputs_are_readable_by_their_owner_only(workspace, monkeypatch):
    out = claim_output_dir("output/sft/t1", "t1", workspace)
    (out / "config.json").write_text("{}")
    assert locate_model("output/sft/t1", workspace) == str(out)  # alice continues from her own model
    monkeypatch.setenv("BUGAGARIC_TASK_OWNER", "bob")
    refused(lambda: locate_model("output/sft/t1", workspace), "model_name_or_path", "another user's task")
    refused(lambda: paths.readable("output/sft/t1/config.json", "train_data_path", workspace), "train_data_path")
    with paths.scope("root", admin=True):
        assert locate_model("output/sft/t1", workspace) == str(out)


def test_resume_checkpoints_come_from_the_task_itself(workspace):
    out = claim_output_dir("output/sft/t1", "t1", workspace)
    (out / "checkpoint-2").mkdir()
    assert check_resume_checkpoint(str(out / "checkpoint-2"), out, workspace) == out / "checkpoint-2"
    other = claim_output_dir("output/sft/t2", "t2", workspace)
    (other / "checkpoint-5").mkdir()
    refused(lambda: check_resume_checkpoint(str(other / "checkpoint-5"), out, workspace), "checkpoint", "not inside")
    refused(lambda: check_resume_checkpoint("/etc", out, workspace), "checkpoint")


def test_a_rotated_checkpoint_stands_for_the_newest_later_one(workspace):
    """save_total_limit deleted checkpoint-3 after the control plane last heard of it: resume from the newest later
    one of the same directory; never an earlier one, never another task's."""
    out = claim_output_dir("output/sft/t1", "t1", workspace)
    for step in (1, 6, 9, 12):
        (out / f"checkpoint-{step}").mkdir()
        (out / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (out / "checkpoint-15").mkdir()  # killed while saving: no trainer_state.json
    assert check_resume_checkpoint(str(out / "checkpoint-3"), out, workspace) == out / "checkpoint-12"
    refused(lambda: check_resume_checkpoint(str(out / "checkpoint-20"), out, workspace), "checkpoint", "not found")
    refused(lambda: check_resume_checkpoint(str(out / "stages" / "split"), out, workspace), "checkpoint", "not found")
    other = claim_output_dir("output/sft/t2", "t2", workspace)
    (other / "checkpoint-5").mkdir()
    (other / "checkpoint-5" / "trainer_state.json").write_text("{}")
    refused(lambda: check_resume_checkpoint(str(other / "checkpoint-1"), out, workspace), "checkpoint", "not inside")


def test_the_dry_run_report_names_the_field_for_every_path(workspace, tmp_path):
    secret = str(tmp_path / "outside" / "secret.jsonl")
    base = {"model_name_or_path": "m", "train_data_path": "data/train.jsonl"}
    cases = [
        ("sft", {**base, "train_data_path": secret}, "train_data_path"),
        ("sft", {**base, "eval_data_path": secret}, "eval_data_path"),
        ("sft", {**base, "config_file": secret}, "config_file"),
        ("sft", {**base, "model_name_or_path": str(tmp_path / "outside")}, "model_name_or_path"),
        ("sft", {**base, "output_dir": "/tmp/x"}, "output_dir"),
        ("dpo", {**base, "train_data_path": secret}, "train_data_path"),
        ("kbalign", {"model_name_or_path": "m", "input_path": secret}, "input_path"),
        ("kbalign", {"model_name_or_path": "m", "input_path": str(tmp_path / "outside")}, "input_path"),
        ("embedding", {"model_name_or_path": "m", "train_data": secret}, "train_data"),
    ]
    for type_name, config, field in cases:
        report = check(type_name, config, workspace, deep=False)
        assert not report["ok"] and report["error"]["field"] == field, (type_name, field, report)
        assert SECRET not in json.dumps(report)


def test_an_output_directory_that_cannot_be_created_is_a_clear_error(workspace):
    (workspace / "output").mkdir()
    (workspace / "output" / "blocker").write_text("a file where the task's parent directory would be")
    refused(lambda: claim_output_dir("output/blocker/t1", "t1", workspace), "output_dir",
            "output/blocker/t1 cannot be created on this host")
