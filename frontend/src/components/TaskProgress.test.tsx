import { screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import type { Progress, Task } from "../api/types";
import { stageLabel } from "../lib/stages";
import { renderWithI18n } from "../test/render";
import { makeProgress, makeTask } from "../test/tasks";
import { TaskProgress } from "./TaskProgress";

function task(progress: Partial<Progress>, status: Task["status"] = "running"): Task {
  return makeTask({ type: "kbalign", status, progress: makeProgress(progress) });
}

describe("<TaskProgress>", () => {
  it("shows KBAlign's annotation stage by name with its count, in both languages, and the bar follows it", () => {
    const annotating = task({ stage: "annotate_short", stage_done: 12, stage_total: 40 });
    const { unmount } = renderWithI18n(<TaskProgress task={annotating} />, "en");
    expect(screen.getByTestId("progress-stage").textContent).toBe("Annotating short Q&A: 12 of 40");
    expect(screen.getByRole("progressbar").getAttribute("aria-valuenow")).toBe("30");
    expect(screen.queryByText(/Waiting for training/)).toBeNull();
    unmount();
    renderWithI18n(<TaskProgress task={annotating} />, "zh");
    expect(screen.getByTestId("progress-stage").textContent).toBe("标注短问答：12 / 40");
  });

  it("shows training steps once they are the progress, and no stale stage after the task ended", () => {
    renderWithI18n(<TaskProgress task={task({ step: 3, total_steps: 60, percent: 5 })} />, "en");
    expect(screen.queryByTestId("progress-stage")).toBeNull();
    expect(screen.getByTestId("progress-steps").textContent).toContain("step 3 of 60");
  });

  it("hides the last stage of a finished task", () => {
    renderWithI18n(<TaskProgress task={task({ stage: "eval_round_2", stage_done: 5, stage_total: 5 }, "succeeded")} />);
    expect(screen.queryByTestId("progress-stage")).toBeNull();
  });

  it("labels numbered and unknown stages", () => {
    expect(stageLabel("train_round_2")).toMatchObject({ key: "stage.trainRound", params: { n: 2 } });
    expect(stageLabel("eval_base")).toMatchObject({ key: "stage.eval", params: { phase: "base" } });
    expect(stageLabel("something_new")).toMatchObject({ key: null, name: "something_new" });
  });
});
