// The task form's pickers: a dataset of the form's type fills `dataset:<id>`, a model fills its name, and a typed
// path still goes through as typed.
import { fireEvent, screen, waitFor } from "@testing-library/react";
import { MemoryRouter } from "react-router-dom";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { setToken } from "../api/client";
import type { JsonSchema } from "../api/types";
import { stubFetchRoutes } from "../test/fetchRoutes";
import { renderWithI18n } from "../test/render";
import { FinetunePage } from "./FinetunePage";

const str = (title: string): JsonSchema => ({ title, type: "string", minLength: 1 });
const optional = (title: string): JsonSchema => ({ title, anyOf: [{ type: "string" }, { type: "null" }], default: null });

const schema = (dataField: string): JsonSchema => ({
  type: "object",
  required: ["model_name_or_path", dataField],
  properties: {
    model_name_or_path: str("Model"),
    [dataField]: str("Data"),
    eval_data_path: optional("Eval data"),
    output_dir: optional("Output dir"),
  },
});

const template = (type: string, dataField: string) => ({
  type,
  name: type.toUpperCase(),
  description: "",
  builtin: true,
  default_config: { model_name_or_path: "gpt2" },
  json_schema: schema(dataField),
  data_example: {},
});

const dataset = (id: string, type: string, name: string, rows: number) => ({
  id,
  name,
  type,
  rows,
  size: 100,
  sha256: id.padEnd(64, "0"),
  created_at: null,
  owner: "admin",
});

beforeEach(() => setToken("tok"));
afterEach(() => vi.unstubAllGlobals());

function renderPage(type = "sft") {
  const calls = stubFetchRoutes({
    "/api/finetune/templates": { json: { templates: [template("sft", "train_data_path"), template("kbalign", "input_path")] } },
    "/api/finetune/datasets": {
      json: {
        datasets: [
          dataset("ds-sft", "sft", "chat.jsonl", 64),
          dataset("ds-dpo", "dpo", "pairs.jsonl", 10),
          dataset("ds-kb", "kbalign", "kb.jsonl", 5),
        ],
      },
    },
    "/api/finetune/models": {
      json: { models: [{ name: "tiny-llama", kind: "causal_lm", size: 1000, agents: ["agent-a", "agent-b"] }] },
    },
  });
  renderWithI18n(
    <MemoryRouter initialEntries={[`/finetune?type=${type}`]}>
      <FinetunePage />
    </MemoryRouter>,
    "en",
  );
  return calls;
}

const picker = (field: string) => document.querySelector<HTMLSelectElement>(`select[data-picker-for='${field}']`)!;
const input = (field: string) => document.getElementById(`field-${field}`) as HTMLInputElement;
const optionTexts = (select: HTMLSelectElement) => [...select.options].map((o) => o.textContent);
// The form takes the template's defaults in an effect after the template arrives; a change fired before that effect
// ran would be overwritten by it (the pickers can show first: their lists load independently).
const formReady = () => waitFor(() => expect(input("model_name_or_path")?.value).toBe("gpt2"));

describe("FinetunePage pickers", () => {
  it("offers the datasets of the form's type next to each data field and fills dataset:<id>", async () => {
    renderPage("sft");
    await formReady();
    await waitFor(() => expect(picker("train_data_path")?.options.length).toBe(2));
    expect(optionTexts(picker("train_data_path"))).toEqual(["Pick a dataset…", "chat.jsonl · 64 rows"]);
    expect(picker("eval_data_path")).not.toBeNull();
    expect(picker("output_dir")).toBeNull();

    fireEvent.change(picker("train_data_path"), { target: { value: "ds-sft" } });
    expect(input("train_data_path").value).toBe("dataset:ds-sft");
    expect(picker("train_data_path").value).toBe("ds-sft");

    // A typed path stays allowed; the picker then shows no selection.
    fireEvent.change(input("train_data_path"), { target: { value: "/data/mine.jsonl" } });
    expect(input("train_data_path").value).toBe("/data/mine.jsonl");
    expect(picker("train_data_path").value).toBe("");
  });

  it("uses the type's own input fields (kbalign: input_path) and its own datasets", async () => {
    renderPage("kbalign");
    await formReady();
    await waitFor(() => expect(picker("input_path")?.options.length).toBe(2));
    expect(optionTexts(picker("input_path"))).toEqual(["Pick a dataset…", "kb.jsonl · 5 rows"]);
    fireEvent.change(picker("input_path"), { target: { value: "ds-kb" } });
    expect(input("input_path").value).toBe("dataset:ds-kb");
  });

  it("the model picker lists the agents' models and fills the name; the start request carries both", async () => {
    const calls = renderPage("sft");
    await formReady();
    await waitFor(() => expect(picker("model_name_or_path")?.options.length).toBe(2));
    expect(optionTexts(picker("model_name_or_path"))[1]).toBe("tiny-llama · causal_lm · 2 agent(s) (agent-a, agent-b)");
    fireEvent.change(picker("model_name_or_path"), { target: { value: "tiny-llama" } });
    expect(input("model_name_or_path").value).toBe("tiny-llama");
    await waitFor(() => expect(picker("train_data_path").options.length).toBe(2));
    fireEvent.change(picker("train_data_path"), { target: { value: "ds-sft" } });
    fireEvent.click(screen.getByTestId("start"));
    await waitFor(() => expect(calls.some((c) => c.url === "/api/finetune/start")).toBe(true));
    const start = calls.find((c) => c.url === "/api/finetune/start")!;
    expect(start.body).toMatchObject({
      type: "sft",
      config: { model_name_or_path: "tiny-llama", train_data_path: "dataset:ds-sft", output_dir: null },
    });
  });

  it("says so when there is nothing to pick, and the inputs still work", async () => {
    stubFetchRoutes({
      "/api/finetune/templates": { json: { templates: [template("sft", "train_data_path")] } },
      "/api/finetune/datasets": { json: { datasets: [] } },
      // No models route on this gateway: 404.
    });
    renderWithI18n(
      <MemoryRouter initialEntries={["/finetune?type=sft"]}>
        <FinetunePage />
      </MemoryRouter>,
      "en",
    );
    await formReady();
    await waitFor(() => expect(picker("train_data_path")).not.toBeNull());
    expect(picker("train_data_path").disabled).toBe(true);
    expect(optionTexts(picker("train_data_path"))).toEqual(["No sft datasets"]);
    expect(optionTexts(picker("model_name_or_path"))).toEqual(["No models on any agent"]);
    fireEvent.change(input("train_data_path"), { target: { value: "data/train.jsonl" } });
    expect(input("train_data_path").value).toBe("data/train.jsonl");
  });
});
