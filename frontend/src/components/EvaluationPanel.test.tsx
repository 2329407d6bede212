import { screen, within } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import type { MetricPoint, Task } from "../api/types";
import { renderWithI18n } from "../test/render";
import { makeTask } from "../test/tasks";
import { EvaluationPanel } from "./EvaluationPanel";

function task(type: string, status: Task["status"]): Task {
  return makeTask({ type, status });
}

const pt = (seq: number, values: Record<string, unknown>): MetricPoint => ({ seq, time: null, ...values });

describe("<EvaluationPanel>", () => {
  it("shows an embedding task's retrieval metrics before -> after as a table", () => {
    const points = [
      pt(1, { event: "eval", phase: "before", step: 0, "recall@1": 0.25, "ndcg@10": 0.4, queries: 8 }),
      pt(2, { event: "eval", phase: "during", step: 2, "ndcg@10": 0.9 }),
      pt(3, { event: "eval", phase: "after", step: 4, "recall@1": 0.75, "ndcg@10": 0.8, queries: 8 }),
    ];
    renderWithI18n(<EvaluationPanel task={task("embedding", "running")} points={points} />, "en");
    const table = screen.getByTestId("eval-retrieval");
    const row = within(table).getByText("ndcg@10").closest("tr")!;
    expect([...row.querySelectorAll("td")].map((td) => td.textContent)).toEqual(["ndcg@10", "0.4", "0.8", "+0.4"]);
    expect(table.querySelector("[data-metric=queries]")).toBeNull();
    expect(screen.queryByTestId("eval-answers")).toBeNull();
    expect(screen.queryByTestId("predictions")).toBeNull(); // no predictions to fetch for an embedding task
  });

  it("names the answer scores in the user's language and shows only the base phase while training", () => {
    const points = [pt(1, { event: "predict", phase: "before", step: 0, "predict/rows": 5, "predict/exact_match": 0,
      "predict/token_f1": 0.125, "predict/rouge_l": 0.1 })];
    renderWithI18n(<EvaluationPanel task={task("sft", "running")} points={points} />, "zh");
    const table = screen.getByTestId("eval-answers");
    expect(within(table).getByText("词级 F1")).toBeTruthy();
    expect(table.querySelector("[data-metric='predict/rows']")).toBeNull();
    expect(table.querySelector("[data-metric='predict/token_f1'] [data-phase=after]")!.textContent).toBe("—");
    expect(screen.getByText("以贪心解码回答了 5 条验证集问题")).toBeTruthy();
  });

  it("renders nothing for a task without a held-out evaluation", () => {
    const { container } = renderWithI18n(
      <EvaluationPanel task={task("sft", "succeeded")} points={[pt(1, { event: "step", step: 1, loss: 2 })]} />, "en");
    expect(container.innerHTML).toBe("");
  });
});
