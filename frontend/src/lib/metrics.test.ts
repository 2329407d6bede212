import { describe, expect, it } from "vitest";
import type { MetricPoint } from "../api/types";
import { defaultChartKeys, mergePoints, metricKeys, seriesFor, summaryOf } from "./metrics";

const points: MetricPoint[] = [
  { seq: 1, time: null, event: "start", total_steps: 4, num_rows: 32 },
  { seq: 2, time: null, event: "step", step: 1, total_steps: 4, loss: 2.5, learning_rate: 5e-3, grad_norm: 1.2, epoch: 0.25 },
  { seq: 3, time: null, event: "step", step: 2, total_steps: 4, loss: 2.0, learning_rate: 4e-3, grad_norm: 1.0, epoch: 0.5 },
  { seq: 4, time: null, event: "eval", step: 2, eval_loss: 2.1, "recall@1": 0.5 },
  { seq: 5, time: null, event: "end", step: 4, final_loss: 1.5, train_runtime: 9.5 },
];

describe("metrics", () => {
  it("lists every numeric metric key, loss and lr first, bookkeeping keys and start/end events left out", () => {
    expect(metricKeys(points)).toEqual(["loss", "learning_rate", "eval_loss", "grad_norm", "epoch", "recall@1"]);
  });

  it("charts loss, learning rate and eval loss by default, never a stage's bookkeeping values", () => {
    expect(defaultChartKeys(metricKeys(points))).toEqual(["loss", "learning_rate", "eval_loss"]);
    const kbalignStages: MetricPoint[] = [
      { seq: 1, time: null, event: "stage", stage: "chunking", done: 12, total: 12, documents: 3, chunks: 12 },
      { seq: 2, time: null, event: "stage", stage: "annotate_short", done: 4, total: 12 },
    ];
    expect(metricKeys(kbalignStages)).toEqual(["chunks", "documents", "done", "total"]); // still selectable
    expect(defaultChartKeys(metricKeys(kbalignStages))).toEqual([]);
    const training = [...kbalignStages, { seq: 3, time: null, event: "step", step: 1, loss: 2.2, learning_rate: 1e-4 }];
    expect(defaultChartKeys(metricKeys(training))).toEqual(["loss", "learning_rate"]);
  });

  it("builds a series against the step", () => {
    expect(seriesFor(points, "loss")).toEqual({ key: "loss", xs: [1, 2], ys: [2.5, 2.0], xLabel: "step" });
    expect(seriesFor(points, "recall@1").ys).toEqual([0.5]);
  });

  it("falls back to the point index when steps go backwards (several rounds)", () => {
    const rounds: MetricPoint[] = [
      { seq: 1, time: null, step: 1, loss: 3 },
      { seq: 2, time: null, step: 2, loss: 2 },
      { seq: 3, time: null, step: 1, loss: 2.5 },
    ];
    expect(seriesFor(rounds, "loss")).toMatchObject({ xs: [1, 2, 3], xLabel: "index" });
  });

  it("merges by seq without duplicates", () => {
    const a = points.slice(0, 3);
    expect(mergePoints(a, points.slice(2)).map((p) => p.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(mergePoints(points.slice(3), points.slice(0, 2)).map((p) => p.seq)).toEqual([1, 2, 4, 5]);
  });

  it("summarises the end event over the latest metrics", () => {
    expect(summaryOf(points, { loss: 1.6, step: 4 })).toEqual({ loss: 1.6, step: 4, final_loss: 1.5, train_runtime: 9.5 });
  });
});
