// Evaluation results of a task, from its metric points and its predictions file: the before -> after table of a
// trainer's held-out evaluation (embedding's retrieval metrics in `eval` events, the LM types' answer scores in
// `predict` events; each event carries phase "before" or "after") and the rows of predictions.jsonl.

import type { MetricPoint } from "../api/types";

export interface BeforeAfterRow {
  key: string;
  before: number | null;
  after: number | null;
  /** after - before, when both exist. */
  delta: number | null;
}

function isNum(v: unknown): v is number {
  return typeof v === "number" && Number.isFinite(v);
}

/** The last point of `event` in `phase`, or undefined. */
function lastOf(points: MetricPoint[], event: string, phase: string): MetricPoint | undefined {
  for (let i = points.length - 1; i >= 0; i -= 1) {
    if (points[i].event === event && points[i].phase === phase) return points[i];
  }
  return undefined;
}

/** Each metric `include` accepts, before and after training, in the order the "after" (else "before") event lists
 * them; [] when neither phase was reported. */
export function beforeAfterRows(
  points: MetricPoint[],
  event: string,
  include: (key: string) => boolean,
): BeforeAfterRow[] {
  const before = lastOf(points, event, "before");
  const after = lastOf(points, event, "after");
  const keys: string[] = [];
  for (const point of [after, before]) {
    for (const [key, value] of Object.entries(point ?? {})) {
      if (isNum(value) && include(key) && !keys.includes(key)) keys.push(key);
    }
  }
  return keys.map((key) => {
    const b = isNum(before?.[key]) ? (before![key] as number) : null;
    const a = isNum(after?.[key]) ? (after![key] as number) : null;
    return { key, before: b, after: a, delta: a !== null && b !== null ? a - b : null };
  });
}

/** Embedding's retrieval metrics (recall@k, mrr@10, ndcg@10, ...). */
export const isRetrievalMetric = (key: string) => key.includes("@");
/** The LM types' answer scores; the row count is not a score. */
export const PREDICT_PREFIX = "predict/";
export const isAnswerScore = (key: string) => key.startsWith(PREDICT_PREFIX) && key !== `${PREDICT_PREFIX}rows`;

export const PREDICTIONS_FILE = "predictions.jsonl";

export type AnswerScores = Record<string, number>;

export interface PredictionLine {
  line: number | null;
  question: string;
  reference: string;
  prediction: string;
  scores: AnswerScores;
  before: { prediction: string; scores: AnswerScores } | null;
}

function scoresOf(value: unknown): AnswerScores {
  const out: AnswerScores = {};
  if (value && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) if (isNum(v)) out[k] = v;
  }
  return out;
}

const str = (v: unknown) => (typeof v === "string" ? v : "");

/** predictions.jsonl's rows; a line that is not a JSON object is skipped (the file is the trainer's, not the user's). */
export function parsePredictions(text: string): PredictionLine[] {
  const rows: PredictionLine[] = [];
  for (const raw of text.split("\n")) {
    if (!raw.trim()) continue;
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch {
      continue;
    }
    if (!value || typeof value !== "object" || Array.isArray(value)) continue;
    const row = value as Record<string, unknown>;
    const before = row.before && typeof row.before === "object" ? (row.before as Record<string, unknown>) : null;
    rows.push({
      line: isNum(row.line) ? row.line : null,
      question: str(row.question),
      reference: str(row.reference),
      prediction: str(row.prediction),
      scores: scoresOf(row.scores),
      before: before ? { prediction: str(before.prediction), scores: scoresOf(before.scores) } : null,
    });
  }
  return rows;
}
