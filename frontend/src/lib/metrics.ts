// Metric points -> chartable series. Any numeric key a trainer emits becomes a choosable chart.

import type { MetricPoint } from "../api/types";

/** Keys that are bookkeeping, not metrics to chart. */
const NOT_METRICS = new Set(["seq", "time", "step", "total_steps", "eta_seconds", "task_id", "event", "timestamp"]);
/** start/end events are one-off summaries, not series. */
const NOT_SERIES_EVENTS = new Set(["start", "end"]);
const PREFERRED = ["loss", "learning_rate", "eval_loss", "grad_norm"];
/** What every type charts until the user picks: the training curves, never a stage's bookkeeping counts. */
const DEFAULT_CHARTS = ["loss", "learning_rate", "eval_loss"];

function isNum(v: unknown): v is number {
  return typeof v === "number" && Number.isFinite(v);
}

export function metricKeys(points: MetricPoint[]): string[] {
  const keys = new Set<string>();
  for (const point of points) {
    if (typeof point.event === "string" && NOT_SERIES_EVENTS.has(point.event)) continue;
    for (const [key, value] of Object.entries(point)) {
      if (!NOT_METRICS.has(key) && isNum(value)) keys.add(key);
    }
  }
  const rest = [...keys].filter((k) => !PREFERRED.includes(k)).sort();
  return [...PREFERRED.filter((k) => keys.has(k)), ...rest];
}

/** The charts shown before the user picks any: loss, learning rate and (once evaluated) eval loss, of the keys the
 * task has emitted so far (none while a multi-stage trainer is still annotating or clustering). */
export function defaultChartKeys(keys: string[]): string[] {
  return DEFAULT_CHARTS.filter((k) => keys.includes(k));
}

export interface Series {
  key: string;
  xs: number[];
  ys: number[];
  /** "step" when the points carry a non-decreasing step, else the point's index. */
  xLabel: "step" | "index";
}

export function seriesFor(points: MetricPoint[], key: string): Series {
  const chosen = points.filter(
    (p) => isNum(p[key]) && !(typeof p.event === "string" && NOT_SERIES_EVENTS.has(p.event)),
  );
  let byStep = chosen.every((p) => isNum(p.step));
  for (let i = 1; byStep && i < chosen.length; i += 1) {
    if ((chosen[i].step as number) < (chosen[i - 1].step as number)) byStep = false;
  }
  return {
    key,
    xs: chosen.map((p, i) => (byStep ? (p.step as number) : i + 1)),
    ys: chosen.map((p) => p[key] as number),
    xLabel: byStep ? "step" : "index",
  };
}

/** Merges new points into the known ones by seq (replays and reconnects never duplicate), sorted by seq. */
export function mergePoints(known: MetricPoint[], incoming: MetricPoint[]): MetricPoint[] {
  if (!incoming.length) return known;
  const last = known.length ? known[known.length - 1].seq : -Infinity;
  if (incoming.every((p, i) => p.seq > last && (i === 0 || p.seq > incoming[i - 1].seq))) {
    return known.concat(incoming);
  }
  const bySeq = new Map<number, MetricPoint>();
  for (const p of known) bySeq.set(p.seq, p);
  for (const p of incoming) bySeq.set(p.seq, p);
  return [...bySeq.values()].sort((a, b) => a.seq - b.seq);
}

/** The final summary: the last "end" event's values over the task's latest metrics. */
export function summaryOf(
  points: MetricPoint[],
  latest: Record<string, unknown> | null | undefined,
): Record<string, unknown> {
  const out: Record<string, unknown> = { ...(latest ?? {}) };
  for (let i = points.length - 1; i >= 0; i -= 1) {
    if (points[i].event === "end") {
      Object.assign(out, points[i]);
      break;
    }
  }
  for (const key of ["seq", "time", "event", "task_id"]) delete out[key];
  return out;
}
