import { describe, expect, it } from "vitest";
import type { MetricPoint } from "../api/types";
import { beforeAfterRows, isAnswerScore, isRetrievalMetric, parsePredictions } from "./evaluation";

const pt = (seq: number, values: Record<string, unknown>): MetricPoint => ({ seq, time: null, ...values });

describe("beforeAfterRows", () => {
  it("pairs the before and after events of one kind, metric by metric", () => {
    const points = [
      pt(1, { event: "predict", phase: "before", step: 0, "predict/rows": 5, "predict/token_f1": 0.1, "predict/rouge_l": 0.2 }),
      pt(2, { event: "step", step: 1, loss: 2 }),
      pt(3, { event: "eval", phase: "after", step: 4, loss: 1.5 }),
      pt(4, { event: "predict", phase: "after", step: 4, "predict/rows": 5, "predict/token_f1": 0.6, "predict/rouge_l": 0.5 }),
    ];
    const rows = beforeAfterRows(points, "predict", isAnswerScore);
    expect(rows.map((r) => r.key)).toEqual(["predict/token_f1", "predict/rouge_l"]);
    expect(rows[0]).toMatchObject({ before: 0.1, after: 0.6 });
    expect(rows[0].delta).toBeCloseTo(0.5);
    expect(rows[1].delta).toBeCloseTo(0.3);
  });

  it("keeps a metric only one phase has, and ignores 'during' evaluations", () => {
    const points = [
      pt(1, { event: "eval", phase: "before", "ndcg@10": 0.3, "recall@1": 0.2, queries: 8 }),
      pt(2, { event: "eval", phase: "during", "ndcg@10": 0.9 }),
      pt(3, { event: "eval", phase: "after", "ndcg@10": 0.7 }),
    ];
    const rows = beforeAfterRows(points, "eval", isRetrievalMetric);
    expect(rows).toEqual([
      { key: "ndcg@10", before: 0.3, after: 0.7, delta: expect.closeTo(0.4) },
      { key: "recall@1", before: 0.2, after: null, delta: null },
    ]);
  });

  it("is empty when the task reported no such event", () => {
    expect(beforeAfterRows([pt(1, { event: "step", loss: 1 })], "predict", isAnswerScore)).toEqual([]);
  });
});

describe("parsePredictions", () => {
  it("reads rows with and without the base model's answer and skips broken lines", () => {
    const text = [
      JSON.stringify({ line: 3, question: "颜色？", reference: "红色", prediction: "红色", scores: { token_f1: 1, rouge_l: 1 },
        before: { prediction: "蓝", scores: { token_f1: 0 } } }),
      "not json",
      "[1, 2]",
      JSON.stringify({ question: "q", reference: "r", prediction: "p", scores: { token_f1: "x" } }),
      "",
    ].join("\n");
    const rows = parsePredictions(text);
    expect(rows).toHaveLength(2);
    expect(rows[0]).toEqual({ line: 3, question: "颜色？", reference: "红色", prediction: "红色",
      scores: { token_f1: 1, rouge_l: 1 }, before: { prediction: "蓝", scores: { token_f1: 0 } } });
    expect(rows[1]).toMatchObject({ line: null, scores: {}, before: null });
  });
});
