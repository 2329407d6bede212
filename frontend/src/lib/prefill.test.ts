import { describe, expect, it } from "vitest";
import type { Task } from "../api/types";
import { canClone, canContinue, cloneConfig, continueConfig, prefillOf, prefillRoute } from "./prefill";

function task(overrides: Partial<Task> = {}): Task {
  return {
    id: "abc123",
    type: "sft",
    status: "succeeded",
    config: { model_name_or_path: "m", train_data_path: "dataset:d1", num_train_epochs: 3, output_dir: "out/run", init_from: null },
    ...overrides,
  } as Task;
}

describe("prefill", () => {
  it("clones a task's config without its claimed output_dir", () => {
    expect(cloneConfig(task())).toEqual({ model_name_or_path: "m", train_data_path: "dataset:d1", num_train_epochs: 3, init_from: null });
  });

  it("continues from the task's own model, keeping the rest editable", () => {
    expect(continueConfig(task())).toMatchObject({ init_from: "task:abc123", num_train_epochs: 3, model_name_or_path: "m" });
    expect(continueConfig(task())).not.toHaveProperty("output_dir");
  });

  it("offers continue only for a succeeded task of a type that can start from one", () => {
    expect(canContinue(task())).toBe(true);
    expect(canContinue(task({ status: "stopped" }))).toBe(false);
    const { init_from: _omit, ...embedding } = task().config; // eslint-disable-line @typescript-eslint/no-unused-vars
    expect(canContinue(task({ type: "embedding", config: embedding }))).toBe(false);
  });

  it("offers no clone of a type the form does not have", () => {
    expect(canClone(task())).toBe(true);
    expect(canClone(task({ type: "export" }))).toBe(false);
  });

  it("routes to the form of the task's type with the config in the state, read back for that type only", () => {
    const route = prefillRoute(task(), "continue");
    expect(route.to).toBe("/finetune?type=sft");
    expect(prefillOf(route.state, "sft")).toEqual({ kind: "continue", from: "abc123", type: "sft", config: continueConfig(task()) });
    expect(prefillOf(route.state, "dpo")).toBeNull();
    expect(prefillOf(null, "sft")).toBeNull();
    expect(prefillOf({ prefill: { type: "sft" } }, "sft")).toBeNull();
  });
});
