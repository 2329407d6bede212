import { describe, expect, it } from "vitest";
import type { MetricPoint } from "../api/types";
import {
  compareUrl,
  diffConfigs,
  finalKeys,
  finalMetrics,
  flattenConfig,
  overlayKeys,
  overlaySeries,
  parseCompareIds,
  runDuration,
  selectionState,
} from "./compare";

const step = (seq: number, s: number, values: Record<string, number>): MetricPoint => ({
  seq,
  time: null,
  event: "step",
  step: s,
  ...values,
});

describe("selection and ids", () => {
  it("allows two to five runs", () => {
    expect([0, 1, 2, 5, 6].map(selectionState)).toEqual(["tooFew", "tooFew", "ok", "ok", "tooMany"]);
  });

  it("reads ids from the URL without blanks or repeats, and writes them back", () => {
    expect(parseCompareIds(" a, b,,a ,c ")).toEqual(["a", "b", "c"]);
    expect(parseCompareIds(null)).toEqual([]);
    expect(compareUrl(["a", "b/c"])).toBe("/compare?ids=a,b%2Fc");
    expect(parseCompareIds(decodeURIComponent(compareUrl(["x", "y"]).split("=")[1]))).toEqual(["x", "y"]);
  });
});

describe("config diff", () => {
  it("flattens nested objects to dotted paths, keeping arrays and empty objects as one value", () => {
    expect(
      flattenConfig({ lr: 1, lora: { r: 8, opts: { alpha: 16 } }, modules: ["q", "v"], extra: {}, none: null }),
    ).toEqual({ lr: 1, "lora.r": 8, "lora.opts.alpha": 16, modules: ["q", "v"], extra: {}, none: null });
  });

  it("marks differing values, keys one run lacks, and leaves equal ones unmarked", () => {
    const rows = diffConfigs([
      { learning_rate: 5e-3, max_steps: 4, lora: { r: 8, alpha: 16 }, only_a: true },
      { learning_rate: 1e-4, max_steps: 4, lora: { r: 16, alpha: 16 } },
    ]);
    expect(rows.map((r) => [r.key, r.differs])).toEqual([
      ["learning_rate", true],
      ["lora.alpha", false],
      ["lora.r", true],
      ["max_steps", false],
      ["only_a", true],
    ]);
    const onlyA = rows.find((r) => r.key === "only_a")!;
    expect(onlyA.cells).toEqual([{ missing: false, value: true }, { missing: true }]);
    const lr = rows.find((r) => r.key === "learning_rate")!;
    expect(lr.cells).toEqual([
      { missing: false, value: 5e-3 },
      { missing: false, value: 1e-4 },
    ]);
  });

  it("compares arrays by content and order, objects inside them regardless of key order", () => {
    const rows = diffConfigs([
      { modules: ["q", "v"], same: ["q", "v"], objs: [{ a: 1, b: 2 }], order: ["q", "v"] },
      { modules: ["q", "k", "v"], same: ["q", "v"], objs: [{ b: 2, a: 1 }], order: ["v", "q"] },
      { modules: ["q", "v"], same: ["q", "v"], objs: [{ a: 1, b: 2 }], order: ["q", "v"] },
    ]);
    expect(Object.fromEntries(rows.map((r) => [r.key, r.differs]))).toEqual({
      modules: true,
      same: false,
      objs: false,
      order: true,
    });
  });

  it("tells a missing key from a null value, a number from its string, and a nested key from a flat one", () => {
    const rows = diffConfigs([{ x: null, n: 1, a: { b: 1 } }, { n: "1", "a.b": 1 }]);
    const byKey = Object.fromEntries(rows.map((r) => [r.key, r]));
    expect(byKey.x.cells).toEqual([{ missing: false, value: null }, { missing: true }]);
    expect(byKey.x.differs).toBe(true);
    expect(byKey.n.differs).toBe(true);
    // Both flatten to "a.b" with the same value: one row, not a difference.
    expect(rows.filter((r) => r.key === "a.b")).toHaveLength(1);
    expect(byKey["a.b"].differs).toBe(false);
  });

  it("treats a key that is an object in one run and a value in another as different keys", () => {
    const rows = diffConfigs([{ lora: { r: 8 } }, { lora: false }]);
    expect(rows.map((r) => [r.key, r.cells.map((c) => c.missing), r.differs])).toEqual([
      ["lora", [true, false], true],
      ["lora.r", [false, true], true],
    ]);
  });
});

describe("overlay", () => {
  const a = {
    id: "a",
    points: [
      { seq: 1, time: null, event: "start", total_steps: 4 },
      step(2, 1, { loss: 2.0, learning_rate: 5e-3 }),
      step(3, 2, { loss: 1.5, learning_rate: 4e-3 }),
      step(4, 4, { loss: 1.0, learning_rate: 1e-3 }),
      { seq: 5, time: null, event: "end", step: 4, train_runtime: 3.5, loss: 9 },
    ] as MetricPoint[],
  };
  const b = {
    id: "b",
    points: [
      step(1, 1, { loss: 2.2, learning_rate: 1e-4 }),
      step(2, 3, { loss: 2.1, learning_rate: 5e-5 }),
      { seq: 3, time: null, event: "eval", step: 3, eval_loss: 2.4 },
      step(4, 5, { loss: 2.0, learning_rate: 1e-5 }),
    ] as MetricPoint[],
  };

  it("merges runs logged at different steps onto one x axis, null where a run has no point", () => {
    const o = overlaySeries([a, b], "loss");
    expect(o.xs).toEqual([1, 2, 3, 4, 5]);
    expect(o.ys).toEqual([
      [2.0, 1.5, null, 1.0, null],
      [2.2, null, 2.1, null, 2.0],
    ]);
    expect(o.xLabel).toBe("step");
    expect(o.counts).toEqual([3, 3]);
  });

  it("leaves a run without the metric all null, and still charts the others", () => {
    const o = overlaySeries([a, b], "eval_loss");
    expect(o.xs).toEqual([3]);
    expect(o.ys).toEqual([[null], [2.4]]);
    expect(o.counts).toEqual([0, 1]);
    expect(o.xLabel).toBe("step");
    expect(overlayKeys([a, b])).toEqual(["loss", "learning_rate", "eval_loss"]);
  });

  it("falls back to the point index when a run has no step, and keeps a repeated x's last value", () => {
    const noSteps = { id: "c", points: [{ seq: 1, time: null, loss: 3 }, { seq: 2, time: null, loss: 2 }] as MetricPoint[] };
    expect(overlaySeries([a, noSteps], "loss").xLabel).toBe("index");
    const repeated = { id: "d", points: [step(1, 1, { loss: 3 }), step(2, 1, { loss: 2.5 }), step(3, 2, { loss: 2 })] };
    const o = overlaySeries([repeated], "loss");
    expect(o.xs).toEqual([1, 2]);
    expect(o.ys).toEqual([[2.5, 2]]);
  });

  it("handles runs with no points at all", () => {
    const o = overlaySeries([{ id: "e", points: [] }, { id: "f", points: [] }], "loss");
    expect(o).toEqual({ key: "loss", xs: [], ys: [[], []], xLabel: "step", counts: [0, 0] });
  });
});

describe("final metrics", () => {
  it("takes each metric's last value, then the end summary's values it has no series of", () => {
    const points: MetricPoint[] = [
      step(1, 1, { loss: 2.0, learning_rate: 5e-3 }),
      { seq: 2, time: null, event: "eval", step: 1, eval_loss: 2.5 },
      step(3, 2, { loss: 1.5, learning_rate: 4e-3 }),
      { seq: 4, time: null, event: "end", step: 2, train_runtime: 3.5, loss: 9, total_steps: 2 },
    ];
    expect(finalMetrics(points)).toEqual({ loss: 1.5, learning_rate: 4e-3, eval_loss: 2.5, train_runtime: 3.5 });
    expect(finalMetrics([])).toEqual({});
  });

  it("lists the keys of every run, loss first", () => {
    expect(finalKeys([{ train_runtime: 1, loss: 1 }, { eval_loss: 2, accuracy: 0.5 }])).toEqual([
      "loss",
      "eval_loss",
      "accuracy",
      "train_runtime",
    ]);
  });

  it("measures a run from start to finish, or to now while it runs", () => {
    expect(runDuration({ started_at: "2026-01-01T00:00:00Z", finished_at: "2026-01-01T00:01:30Z" })).toBe(90);
    expect(runDuration({ started_at: "2026-01-01T00:00:00Z", finished_at: null }, Date.parse("2026-01-01T00:00:10Z"))).toBe(10);
    expect(runDuration({ started_at: null, finished_at: null })).toBeNull();
  });
});
