// The gateway's JSON shapes, as its OpenAPI document types them (gateway/api_models.py): schema.d.ts is generated
// from that document (`npm run gen:api`; never edit it by hand), and the names here are the console's for its
// schemas. Console-only narrowings and helpers are written here.
import type { components } from "./schema";

type Schemas = components["schemas"];

/** The error JSON of every failed call: `{"error": {"code", "message", "field"}}`. */
export type ErrorResponse = Schemas["ErrorResponse"];

/** "unspecified": a task that never got a status; "unknown": a newer control plane's. */
export type TaskStatus = Schemas["Task"]["status"];

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

export type Progress = Schemas["Progress"];

export type TaskEvent = Schemas["TaskEvent"];

/** The check of a task's paths and data at submit; "pending" while it waits outside the queue for it. */
export type DataValidation = Schemas["DataValidation"];

export type Task = Schemas["Task"];

export type Checkpoint = Schemas["Checkpoint"];

export type TaskAttempt = Schemas["TaskAttempt"];

export type TaskList = Schemas["TaskList"];

export type LogLine = Schemas["LogLine"];

/** seq and time, then the values the trainer logged (step, loss, ...) as keys. */
export type MetricPoint = Schemas["MetricPoint"] & { step?: number; event?: string };

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

export type ValidationProblem = Schemas["ValidationProblem"];

export type ValidationReport = Schemas["ValidationReport"];

/** Who a token belongs to (GET /api/auth/me; a login's `user` has its creation time too). */
export type User = Schemas["CurrentUser"];

export type LoginReply = Schemas["LoginReply"];

/** The task types a dataset can be uploaded for (the server validates each row by that type's rules). */
export const DATASET_TYPES = ["sft", "dpo", "embedding", "kbalign"] as const;

/** An uploaded dataset (POST/GET /api/finetune/datasets). Used in a task config as `dataset:<id>`. */
export type Dataset = Schemas["Dataset"];

/** GET /api/finetune/datasets/{id}: the dataset plus its stats and its first rows. */
export type DatasetDetail = Schemas["DatasetDetail"];

/** A model some agents hold (GET /api/finetune/models). */
export type ModelEntry = Schemas["ModelEntry"];

export type ArtifactKind = "adapter" | "model" | "checkpoint" | "summary" | "log" | "predictions" | "tracking";

export type Artifact = Schemas["Artifact"];

/** GET /api/finetune/tasks/{id}/artifacts: read from the agent's disk, or from the published model once it is gone. */
export type ArtifactList = Schemas["ArtifactList"];

export const EXPORT_DTYPES = ["auto", "float32", "float16", "bfloat16"] as const;
export type ExportDtype = (typeof EXPORT_DTYPES)[number];

/** One device of an agent: a GPU with NVML readings, or a CPU slot (kind "cpu": no readings). */
export type AgentDevice = Schemas["AgentDevice"];

export type AgentInfo = Schemas["AgentInfo"];

/** GET /api/health. */
export type SystemHealth = Schemas["SystemHealth"];
