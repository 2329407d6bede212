// A complete Task (every key the gateway sends; gateway/api_models.py) for tests to override what they look at.
import type { Progress, Task } from "../api/types";

export function makeProgress(over: Partial<Progress> = {}): Progress {
  return {
    step: 0, total_steps: 0, percent: 0, eta_seconds: null, epoch: null, loss: null, learning_rate: null,
    stage: null, stage_done: 0, stage_total: 0, ...over,
  };
}

export function makeTask(over: Partial<Task> = {}): Task {
  return {
    id: "t1", type: "sft", status: "running", config: {}, created_at: null, updated_at: null, started_at: null,
    finished_at: null, agent_id: null, error: null, error_details: null, error_reason: null, exit_code: 0, pid: null,
    owner: null, progress: makeProgress(), latest_metrics: {}, output_dir: null, last_log_seq: 0, events: [],
    priority: 0, queue_position: null, devices: [], attempt: 1, max_retries: 0, checkpoints: [], attempts: [],
    validation: null, published_model_sha256: "", nodes: 1, gpus_per_node: 0, node_placements: [], ...over,
  };
}
