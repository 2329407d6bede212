// Comparing 2-5 runs: which ids, their configs diffed key by key, their curves merged onto one x axis, their finals.

import type { MetricPoint, Task } from "../api/types";
import { metricKeys, seriesFor } from "./metrics";

export const MIN_COMPARE = 2;
export const MAX_COMPARE = 5;

export type SelectionState = "tooFew" | "tooMany" | "ok";

export function selectionState(count: number): SelectionState {
  if (count < MIN_COMPARE) return "tooFew";
  if (count > MAX_COMPARE) return "tooMany";
  return "ok";
}

/** `?ids=a,b,c` -> ["a", "b", "c"]: trimmed, blanks and repeats dropped (a repeat is not a second run). */
export function parseCompareIds(param: string | null | undefined): string[] {
  const ids = (param ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  return [...new Set(ids)];
}

export function compareUrl(ids: string[]): string {
  return `/compare?ids=${ids.map(encodeURIComponent).join(",")}`;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Nested objects -> dotted paths (`{lora: {r: 8}}` -> `{"lora.r": 8}`). Arrays and empty objects stay one value:
 * a list such as target_modules is one setting, and index paths would misalign lists of different lengths. */
export function flattenConfig(config: Record<string, unknown>, prefix = ""): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(config ?? {})) {
    const path = prefix ? `${prefix}.${key}` : key;
    if (isPlainObject(value) && Object.keys(value).length > 0) Object.assign(out, flattenConfig(value, path));
    else out[path] = value;
  }
  return out;
}

/** JSON with object keys sorted, so `{a, b}` and `{b, a}` compare equal (and 5e-3 equals 0.005). */
export function canonical(value: unknown): string {
  if (value === undefined) return "undefined";
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (isPlainObject(value)) {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

export type DiffCell = { missing: true } | { missing: false; value: unknown };

export interface DiffRow {
  key: string;
  cells: DiffCell[];
  /** Some two runs hold different values, or one lacks the key. */
  differs: boolean;
}

/** One row per flattened key of any config (sorted), one cell per config in the order given. */
export function diffConfigs(configs: Record<string, unknown>[]): DiffRow[] {
  const flat = configs.map((c) => flattenConfig(c));
  const keys = [...new Set(flat.flatMap((f) => Object.keys(f)))].sort();
  return keys.map((key) => {
    const cells: DiffCell[] = flat.map((f) =>
      Object.prototype.hasOwnProperty.call(f, key) ? { missing: false, value: f[key] } : { missing: true },
    );
    const seen = new Set(cells.map((c) => (c.missing ? "\u0000missing" : canonical(c.value))));
    return { key, cells, differs: seen.size > 1 };
  });
}

export interface Run {
  id: string;
  points: MetricPoint[];
}

/** Every metric any of the runs emitted, loss and learning rate first (as the monitor orders them). */
export function overlayKeys(runs: Run[]): string[] {
  return metricKeys(runs.flatMap((r) => r.points));
}

export interface Overlay {
  key: string;
  /** The union of the runs' x values, ascending. */
  xs: number[];
  /** One array per run, aligned to xs; null where that run has no point at that x. */
  ys: (number | null)[][];
  /** "step" when every run's series is by step, else "index". */
  xLabel: "step" | "index";
  /** Points per run (0: the run never emitted this metric). */
  counts: number[];
}

/** The runs' series of `key` on one x axis (uPlot draws aligned arrays): runs logging at different steps leave
 * nulls for each other, which the chart spans. A run repeating an x keeps its last value there. */
export function overlaySeries(runs: Run[], key: string): Overlay {
  const series = runs.map((r) => seriesFor(r.points, key));
  const xs = [...new Set(series.flatMap((s) => s.xs))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const ys = series.map((s) => {
    const row: (number | null)[] = xs.map(() => null);
    s.xs.forEach((x, i) => {
      row[index.get(x) as number] = s.ys[i];
    });
    return row;
  });
  const withPoints = series.filter((s) => s.xs.length > 0);
  return {
    key,
    xs,
    ys,
    xLabel: withPoints.every((s) => s.xLabel === "step") ? "step" : "index",
    counts: series.map((s) => s.xs.length),
  };
}

const NOT_FINAL = new Set(["seq", "time", "event", "task_id", "step", "total_steps", "eta_seconds", "timestamp"]);

/** The last value of every metric of a run, then the numeric values of its final "end" summary it has no series of
 * (train_runtime, ...). */
export function finalMetrics(points: MetricPoint[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const key of metricKeys(points)) {
    const s = seriesFor(points, key);
    if (s.ys.length) out[key] = s.ys[s.ys.length - 1];
  }
  for (let i = points.length - 1; i >= 0; i -= 1) {
    if (points[i].event !== "end") continue;
    for (const [key, value] of Object.entries(points[i])) {
      if (!NOT_FINAL.has(key) && !(key in out) && typeof value === "number" && Number.isFinite(value)) out[key] = value;
    }
    break;
  }
  return out;
}

/** Every key any run has a final value of, in the monitor's order. */
export function finalKeys(finals: Record<string, number>[]): string[] {
  return metricKeys(finals.map((f, i) => ({ seq: i, time: null, ...f })));
}

/** Seconds from start to finish (or to `now` while it runs); null before it started. */
export function runDuration(task: Pick<Task, "started_at" | "finished_at">, now: number = Date.now()): number | null {
  if (!task.started_at) return null;
  const start = Date.parse(task.started_at);
  const end = task.finished_at ? Date.parse(task.finished_at) : now;
  if (Number.isNaN(start) || Number.isNaN(end)) return null;
  return Math.max(0, (end - start) / 1000);
}
