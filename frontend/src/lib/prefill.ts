// The 模型微调 form opened from a task ("clone as new task", "continue training"): the task's config travels in the
// route state, so it reaches the form without a round trip and never lands in a shareable URL. It wins over the
// user's draft of that type (the user asked for this config just now), and becomes the new draft.

import type { Task } from "../api/types";

export type PrefillKind = "clone" | "continue";

export interface FormPrefill {
  kind: PrefillKind;
  /** The task it came from. */
  from: string;
  type: string;
  config: Record<string, unknown>;
}

/** The config key through which an LM task starts from a finished task's model (trainers/common/config.py). */
export const INIT_FROM = "init_from";

// Types the form does not offer (registered with listed=False: queued by an action, e.g. the monitor's export).
const NOT_IN_FORM = ["export"];

/** Whether the form can take this task's type (a clone of an export is another export from the monitor). */
export function canClone(task: Task): boolean {
  return !NOT_IN_FORM.includes(task.type);
}

/** The task's config as a new task's: without its output_dir (a named one stays claimed by the task that used it). */
export function cloneConfig(task: Task): Record<string, unknown> {
  const config = { ...(task.config ?? {}) };
  delete config.output_dir;
  return config;
}

/** Whether a task can be continued: it succeeded (so its final model is there) and its type trains from one. */
export function canContinue(task: Task): boolean {
  return task.status === "succeeded" && INIT_FROM in (task.config ?? {});
}

/** A new task's config that keeps training this task's final adapter or weights (epochs and the rest editable). */
export function continueConfig(task: Task): Record<string, unknown> {
  return { ...cloneConfig(task), [INIT_FROM]: `task:${task.id}` };
}

export function prefillFor(task: Task, kind: PrefillKind): FormPrefill {
  return { kind, from: task.id, type: task.type, config: kind === "clone" ? cloneConfig(task) : continueConfig(task) };
}

/** Where to navigate, and with what state, to open the form prefilled. */
export function prefillRoute(task: Task, kind: PrefillKind): { to: string; state: { prefill: FormPrefill } } {
  return { to: `/finetune?type=${encodeURIComponent(task.type)}`, state: { prefill: prefillFor(task, kind) } };
}

/** The prefill carried by a location's state, if it is for this type. */
export function prefillOf(state: unknown, type: string): FormPrefill | null {
  const prefill = (state as { prefill?: FormPrefill } | null)?.prefill;
  if (!prefill || typeof prefill !== "object" || prefill.type !== type) return null;
  if (!prefill.config || typeof prefill.config !== "object") return null;
  return prefill;
}
