// JSON shapes of the gateway (gateway/serializers.py) the console reads.

export type TaskStatus =
  | "queued"
  | "starting"
  | "running"
  | "stopping"
  | "succeeded"
  | "failed"
  | "stopped"
  | "unknown";

export const TASK_STATUSES: TaskStatus[] = [
  "queued",
  "starting",
  "running",
  "stopping",
  "succeeded",
  "failed",
  "stopped",
];
export const ACTIVE_STATUSES: TaskStatus[] = ["queued", "starting", "running", "stopping"];
export const FINISHED_STATUSES: TaskStatus[] = ["succeeded", "failed", "stopped"];

export interface Progress {
  step: number;
  total_steps: number;
  percent: number;
  eta_seconds: number | null;
  epoch: number | null;
  loss: number | null;
  learning_rate: number | null;
  /** A multi-stage trainer's current stage (KBAlign: annotate_short, clustering, ...); null while steps are the progress. */
  stage?: string | null;
  stage_done?: number;
  stage_total?: number;
}

export interface TaskEvent {
  time: string | null;
  from_status: string;
  to_status: string;
  reason: string;
  message: string;
}

/** The check of a task's paths and data at submit; "pending" while it waits outside the queue for it. */
export interface DataValidation {
  state: "pending" | "passed" | "failed" | "";
  rows: number;
  message: string;
}

export interface Task {
  id: string;
  type: string;
  status: TaskStatus;
  config: Record<string, unknown>;
  created_at: string | null;
  updated_at: string | null;
  started_at: string | null;
  finished_at: string | null;
  agent_id: string | null;
  error: string | null;
  error_reason: string | null;
  /** A failure's traceback and the stderr around it, apart from `error` (the message): shown folded. */
  error_details?: string | null;
  exit_code: number;
  pid: number | null;
  progress: Progress;
  latest_metrics: Record<string, unknown>;
  output_dir: string | null;
  last_log_seq: number;
  events: TaskEvent[];
  validation?: DataValidation | null;
  /** The sha256 of the final model published to the platform's blob store; "" until published. */
  published_model_sha256?: string;
  /** Higher runs first (then older first); changeable while queued (PATCH /finetune/tasks/{id}). */
  priority?: number;
  /** 1-based while queued (and its data check passed), else null. */
  queue_position?: number | null;
  /** 1 for the first run; a resume or an agent-loss requeue starts the next. */
  attempt?: number;
  checkpoints?: Checkpoint[];
  attempts?: TaskAttempt[];
  /** Who submitted it (a normal user only ever lists their own). */
  owner?: string | null;
  /** The device indices it is placed on (on agent_id); empty while queued. */
  devices?: number[];
}

export interface Checkpoint {
  path: string;
  step: number;
  time: string | null;
  attempt: number;
}

export interface TaskAttempt {
  number: number;
  agent_id: string | null;
  devices: number[];
  started_at: string | null;
  ended_at: string | null;
  /** How the attempt ended; null while it runs. */
  status: TaskStatus | null;
  reason: string | null;
  resumed_from: string | null;
}

export interface TaskList {
  tasks: Task[];
  total: number;
  limit: number;
  offset: number;
}

export interface LogLine {
  seq: number;
  time: string | null;
  stream: string;
  text: string;
}

export interface MetricPoint {
  seq: number;
  time: string | null;
  step?: number;
  event?: string;
  [key: string]: unknown;
}

export interface JsonSchema {
  type?: string | string[];
  title?: string;
  description?: string;
  default?: unknown;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  allOf?: JsonSchema[];
  enum?: unknown[];
  const?: unknown;
  items?: JsonSchema;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  advanced?: boolean;
  $ref?: string;
  $defs?: Record<string, JsonSchema>;
  [key: string]: unknown;
}

/** A built-in task type: GET /api/finetune/templates entries without `builtin: false`. */
export interface TypeTemplate {
  type: string;
  name: string;
  description: string;
  default_config: Record<string, unknown>;
  json_schema: JsonSchema;
  data_example: unknown;
  builtin?: boolean;
  id?: string | null;
  owner?: string | null;
}

/**
 * A template a user saved (`builtin: false`). The gateway sends it in the template shape, its config as
 * `default_config`; `config` is accepted too.
 */
export interface SavedTemplate {
  id: string;
  name: string;
  type: string;
  config?: Record<string, unknown>;
  default_config?: Record<string, unknown>;
  builtin: false;
  created_at?: string | null;
  owner?: string | null;
}

export type TemplateEntry = TypeTemplate | SavedTemplate;

export function isSavedTemplate(t: TemplateEntry): t is SavedTemplate {
  if (t.builtin === true) return false;
  return t.builtin === false || (!!t.id && !("json_schema" in t));
}

export function savedConfig(t: SavedTemplate): Record<string, unknown> {
  return t.config ?? t.default_config ?? {};
}

export interface ValidationProblem {
  line: number;
  field: string;
  message: string;
}

export interface ValidationReport {
  ok: boolean;
  type: string;
  rows: number;
  problems: ValidationProblem[];
  stats: Record<string, unknown>;
  error: { field: string | null; message: string } | null;
  warnings: string[];
  agent_id: string | null;
}

export interface User {
  username: string;
  role: string;
}

export interface LoginReply {
  token: string;
  expires_at: string | null;
  user: User;
}

/** The task types a dataset can be uploaded for (the server validates each row by that type's rules). */
export const DATASET_TYPES = ["sft", "dpo", "embedding", "kbalign"] as const;

/** An uploaded dataset (POST/GET /api/finetune/datasets). Used in a task config as `dataset:<id>`. */
export interface Dataset {
  id: string;
  name: string;
  type: string;
  sha256: string;
  size: number;
  rows: number;
  created_at: string | null;
  owner: string | null;
}

/** GET /api/finetune/datasets/{id}: the dataset plus its stats and its first rows. */
export interface DatasetDetail extends Dataset {
  stats: Record<string, unknown>;
  preview: unknown[];
}

/** A model some agents hold (GET /api/finetune/models). */
export interface ModelEntry {
  name: string;
  kind: string;
  size: number;
  agents: string[];
}

export type ArtifactKind = "adapter" | "model" | "checkpoint" | "summary" | "log" | "predictions";

export interface Artifact {
  path: string;
  size: number;
  kind: ArtifactKind | string;
}

/** GET /api/finetune/tasks/{id}/artifacts: read from the agent's disk, or from the published model once it is gone. */
export interface ArtifactList {
  artifacts: Artifact[];
  source: "agent" | "published" | string;
}

export const EXPORT_DTYPES = ["auto", "float32", "float16", "bfloat16"] as const;
export type ExportDtype = (typeof EXPORT_DTYPES)[number];

/** One device of an agent: a GPU with NVML readings, or a CPU slot (kind "cpu": no readings). */
export interface AgentDevice {
  index: number;
  kind: "gpu" | "cpu" | string;
  uuid: string | null;
  name: string | null;
  memory_total_bytes: number;
  memory_free_bytes: number;
  utilization_percent: number;
}

export interface AgentInfo {
  agent_id: string;
  address: string;
  hostname: string;
  slots: number;
  free_slots: number;
  alive: boolean;
  last_heartbeat: string | null;
  devices: AgentDevice[];
  warm_pool_memory_bytes: number;
  /** Device indices held by active tasks, whoever owns them. */
  busy_devices?: number[];
}

/** GET /api/health (the parts the console shows). */
export interface SystemHealth {
  status: string;
  control_plane: { status: string; queued_tasks: number; running_tasks: number };
  agents: AgentInfo[];
}
