"""Sharded training (`distributed`), saving on every node, and the graceful stop agreed across ranks: the config and
arguments checks in process, the stop on real torchrun workers (two CPU ranks, gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from tests.helpers.kbalign_data import write_kb
from tests.helpers.tiny_models import write_sft_rows
from trainers import preflight, registry
from trainers.common.distributed import DEEPSPEED_MISSING, deepspeed_installed
from trainers.errors import EXIT_STOPPED_EARLY, ConfigError

needs_no_deepspeed = pytest.mark.skipif(deepspeed_installed(), reason="DeepSpeed is installed on this host")


def sft_config(model: str | Path, **extra) -> dict:
    return {"model_name_or_path": str(model), "train_data_path": "data/train.jsonl", "output_dir": "output/sft",
            "use_lora": True,
            "max_length": 128, "per_device_train_batch_size": 2, **extra}


def refused(config: dict, type_name: str = "sft") -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        registry.get(type_name).parse_config(config)
    return caught.value


def build(config: dict, workspace: Path, type_name: str = "sft"):
    """The training arguments exactly as the trainer builds them."""
    from trl import SFTConfig

    from trainers.common.training_args import build_args

    parsed = registry.get(type_name).parse_config(config)
    return build_args(SFTConfig, parsed, workspace / "output", workspace)


# --- the config ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"])
def test_every_strategy_is_a_valid_config(strategy):
    for type_name in ("sft", "dpo"):
        config = registry.get(type_name).parse_config(sft_config("m", distributed={"strategy": strategy}))
        assert config.distributed.strategy == strategy and config.distributed.cpu_offload is False
    assert registry.get("sft").parse_config(sft_config("m")).distributed is None


@pytest.mark.parametrize(("distributed", "field", "words"), [
    ({"strategy": "zero3"}, "distributed.strategy", "ddp"),
    ({"strategy": "ddp", "cpu_offload": True}, "distributed.cpu_offload", "sharded strategy"),
    ({"strategy": "fsdp", "shards": 2}, "distributed.shards", "unknown config key"),
    ("fsdp", "distributed", ""),
])
def test_a_bad_distributed_option_is_named(distributed, field, words):
    error = refused(sft_config("m", distributed=distributed))
    assert error.field == field and words in error.message


def test_the_schema_carries_the_option_in_both_languages():
    schema = registry.get("kbalign").json_schema()
    prop = schema["properties"]["distributed"]
    assert prop["title_zh"] and prop["help_en"] and prop["advanced"] is True
    strategy = schema["$defs"]["DistributedConfig"]["properties"]["strategy"]
    assert strategy["enum"] == ["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"] and strategy["default"] == "ddp"


# --- the arguments and the dry run -----------------------------------------------------------------------------------

@needs_no_deepspeed
@pytest.mark.parametrize("strategy", ["deepspeed_zero2", "deepspeed_zero3"])
def test_deepspeed_missing_on_the_agent_is_a_clear_error_at_launch_and_in_the_dry_run(tiny_llama_dir, tmp_path,
                                                                                      strategy):
    write_sft_rows(tmp_path / "data/train.jsonl", 4)
    config = sft_config(tiny_llama_dir, distributed={"strategy": strategy})
    with pytest.raises(ConfigError) as caught:
        build(config, tmp_path)
    assert caught.value.field == "distributed.strategy" and DEEPSPEED_MISSING in caught.value.message
    assert "pip install 'bugagaric-finetune[deepspeed]'" in caught.value.message
    report = preflight.check("sft", config, tmp_path)
    assert report["ok"] is False and report["error"]["field"] == "distributed.strategy"
    assert DEEPSPEED_MISSING in report["error"]["message"]


def test_fsdp_on_a_cpu_only_agent_is_refused_not_silently_ddp(tiny_llama_dir, tmp_path):
    """accelerate runs FSDP on accelerators only: on a CPU the same arguments would quietly train as DDP."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has CUDA devices")
    write_sft_rows(tmp_path / "data/train.jsonl", 4)
    report = preflight.check("sft", sft_config(tiny_llama_dir, distributed={"strategy": "fsdp"}), tmp_path)
    assert report["ok"] is False and report["error"]["field"] == "distributed.strategy"
    assert "fsdp needs CUDA devices" in report["error"]["message"]


@pytest.mark.parametrize(("type_name", "config", "words"), [
    ("sft", {"eval_ratio": 0.25}, "predict_after_training: false"),
    ("sft", {"quantization": "4bit"}, "quantized"),
    ("kbalign", {"input_path": "data/kb.jsonl"}, "generates with the model on each rank"),
])
@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed_zero3"])
def test_what_cannot_work_with_sharded_parameters_is_named(tiny_llama_dir, tmp_path, type_name, config, words,
                                                           strategy):
    """Checked before the agent's own abilities, so the dry run on any agent says what to change in the config."""
    write_sft_rows(tmp_path / "data/train.jsonl", 4)
    write_kb(tmp_path / "data/kb.jsonl")
    raw = {**sft_config(tiny_llama_dir, distributed={"strategy": strategy}), **config}
    if type_name == "kbalign":
        raw = {k: v for k, v in raw.items() if k not in ("train_data_path", "output_dir")}
    report = preflight.check(type_name, raw, tmp_path)
    assert report["ok"] is False and report["error"]["field"] == "distributed.strategy", report
    assert words in report["error"]["message"]


def test_sharded_arguments_are_the_trainers_own(tmp_path, monkeypatch):
    """What each strategy hands the HF trainer: FSDP2 with full state dicts (rank 0 writes complete checkpoints), a
    DeepSpeed ZeRO config of "auto" sizes; config_file may not set them too."""
    from trainers.common import distributed

    monkeypatch.delenv("BUGAGARIC_GANG_NODES", raising=False)
    sft = registry.get("sft")
    values = distributed.training_values(sft.parse_config(sft_config("m", distributed={"strategy": "fsdp"})))
    assert values["fsdp"] is True and values["fsdp_config"]["state_dict_type"] == "FULL_STATE_DICT"
    assert values["fsdp_config"]["version"] == 2 and values["ddp_find_unused_parameters"] is False
    zero3 = distributed.training_values(sft.parse_config(sft_config(
        "m", use_lora=False, distributed={"strategy": "deepspeed_zero3", "cpu_offload": True})))["deepspeed"]
    assert zero3["zero_optimization"]["stage"] == 3 and zero3["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert zero3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert zero3["train_micro_batch_size_per_gpu"] == "auto"
    with pytest.raises(ConfigError) as caught:
        distributed.check_extra_args(sft.parse_config(sft_config("m", config_file="extra.yaml", distributed={
            "strategy": "ddp"})), {"fsdp_config": {"version": 1}})
    assert caught.value.field == "config_file" and "distributed.strategy" in caught.value.message


# --- saving on every node --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("env", "each_node"), [
    ({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}, True),  # torchrun across two hosts
    ({"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}, False),  # torchrun on one host
    ({"BUGAGARIC_GANG_NODES": "2"}, True),  # the agent placed a gang
    ({}, False),
])
def test_a_run_over_several_nodes_saves_a_checkpoint_on_each(tiny_llama_dir, tmp_path, monkeypatch, env, each_node):
    """No shared filesystem: every node's local rank 0 writes its own copy of each checkpoint to resume from."""
    for name in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "BUGAGARIC_GANG_NODES"):
        monkeypatch.delenv(name, raising=False)
    from trainers.common import distributed

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert distributed.multi_node() is each_node
    if "WORLD_SIZE" not in env:  # the arguments themselves, in this single process
        write_sft_rows(tmp_path / "data/train.jsonl", 4)
        args = build(sft_config(tiny_llama_dir, save_steps=2), tmp_path)
        assert args.save_on_each_node is each_node


# --- the stop, agreed over the ranks ---------------------------------------------------------------------------------

def _worker_ranks(launcher: psutil.Process) -> dict[int, psutil.Process]:
    """torchrun's workers by their RANK."""
    found = {}
    for child in launcher.children(recursive=True):
        try:
            rank = child.environ().get("RANK")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if rank is not None and "trainers.sft" in " ".join(child.cmdline()):
            found[int(rank)] = child
    return found


def test_sigterm_to_one_rank_stops_both_at_the_same_step_with_a_checkpoint(tiny_llama_dir, tmp_path):
    """The agent's stop can reach the ranks apart (or one only): the flag is agreed every step, so both ranks save the
    same checkpoint and leave together; signalled here is rank 1, which neither reports nor writes the summary."""
    write_sft_rows(tmp_path / "data/train.jsonl", 16)
    (tmp_path / "cfg.json").write_text(json.dumps(sft_config(tiny_llama_dir, max_steps=2000, learning_rate=1e-3)))
    metrics = tmp_path / "metrics.jsonl"
    env = {**os.environ, "BUGAGARIC_WORKSPACE": str(tmp_path), "BUGAGARIC_METRICS_FILE": str(metrics),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    port = str(29300 + os.getpid() % 90)
    launcher = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port, "-m",
         "trainers.sft", "--config", "cfg.json"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    training = threading.Event()

    def read() -> None:  # a thread, so that a hung run fails the test on its timeout instead of blocking on a read
        for line in launcher.stdout:
            lines.append(line)
            if line.startswith("step 3/"):  # training runs on both ranks: each is in the step loop
                training.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert training.wait(180), "".join(lines[-30:])
        workers = _worker_ranks(psutil.Process(launcher.pid))
        assert sorted(workers) == [0, 1], "".join(lines[-30:])
        workers[1].send_signal(signal.SIGTERM)
        try:
            launcher.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("the ranks did not stop together: " + "".join(lines[-30:]))
        reader.join(10)
    finally:
        if launcher.poll() is None:
            for child in psutil.Process(launcher.pid).children(recursive=True):
                try:
                    child.kill()
                except psutil.NoSuchProcess:
                    pass
            launcher.kill()
            launcher.wait()
    text = "".join(lines)
    events = [json.loads(line) for line in metrics.read_text().splitlines()]
    end = events[-1]
    assert end["event"] == "end" and end["stopped_early"] is True, text[-3000:]
    stopped_at = end["step"]
    assert 3 <= stopped_at < 2000
    run_dir = tmp_path / "output/sft"
    checkpoint = run_dir / f"checkpoint-{stopped_at}"
    # Both ranks saved at the very same step: each rank writes its own RNG state into the checkpoint it saves.
    assert (checkpoint / "rng_state_0.pth").is_file() and (checkpoint / "rng_state_1.pth").is_file(), text[-3000:]
    assert [p.name for p in run_dir.glob("checkpoint-*")] == [checkpoint.name]
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == stopped_at
    summary = json.loads((run_dir / "training_summary.json").read_text())
    assert summary["stopped_early"] is True and summary["global_step"] == stopped_at
    assert text.count("stop requested: saving a checkpoint") == 2  # rank 1 (signalled) and rank 0 (agreed)
    assert f"exitcode  : {EXIT_STOPPED_EARLY}" in text or launcher.returncode == EXIT_STOPPED_EARLY, text[-3000:]
    assert not (run_dir / "adapter_model.safetensors").exists()  # a stopped run writes no final model


# --- a checkpoint every node has written -----------------------------------------------------------------------------

_SAVE_ON_TWO_RANKS = """
import sys, time
from types import SimpleNamespace
sys.path.insert(0, {repo!r})
import torch.distributed as dist
from trainers.common.hf_callback import MetricsCallback
from trainers.common.metrics import MetricsEmitter

dist.init_process_group("gloo")
if dist.get_rank() == 1:
    time.sleep(2.0)  # this node is still writing its copy of the checkpoint
    open({marker!r}, "w").write(repr(time.time()))
MetricsCallback(MetricsEmitter({metrics!r})).on_save(SimpleNamespace(output_dir="out"),
                                                     SimpleNamespace(global_step=4, max_steps=8), None)
dist.destroy_process_group()
"""


def test_rank_0_reports_a_checkpoint_only_once_every_rank_has_saved_it(tmp_path):
    """Each node writes its own copy (save_on_each_node): a checkpoint reported before the slowest node finished
    would be one that node cannot resume from, were it killed in between."""
    from tests.helpers.stack import free_port

    script, marker, metrics = tmp_path / "ranks.py", tmp_path / "rank1_saved", tmp_path / "metrics.jsonl"
    script.write_text(_SAVE_ON_TWO_RANKS.format(repo=str(Path(__file__).resolve().parents[1]), marker=str(marker),
                                                metrics=str(metrics)))
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    procs = [subprocess.Popen([sys.executable, str(script)], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    (event,) = [json.loads(line) for line in metrics.read_text().splitlines()]  # rank 0's alone
    assert event["event"] == "checkpoint" and event["step"] == 4
    assert event["time"] >= round(float(marker.read_text()), 3) - 0.001  # not before rank 1 had saved
