// The task form speaks the UI language (field titles/help and type cards from the types' specs) and keeps the user's
// unsaved edits per type across leaving the page; a "clone" prefill wins over the draft; starting or discarding
// clears it.
import { fireEvent, screen, waitFor } from "@testing-library/react";
import { MemoryRouter } from "react-router-dom";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { setToken } from "../api/client";
import type { JsonSchema } from "../api/types";
import type { Lang } from "../i18n";
import { TYPE_TEXTS } from "../lib/fieldTexts";
import { stubFetchRoutes } from "../test/fetchRoutes";
import { renderWithI18n } from "../test/render";
import { FinetunePage } from "./FinetunePage";

const words = (zh: string, en: string) => ({ title_zh: zh, title_en: en, help_zh: `${zh}的说明`, help_en: `${en} help` });

const schema = (card: Record<string, string>): JsonSchema => ({
  type: "object",
  required: ["model_name_or_path", "train_data_path"],
  properties: {
    model_name_or_path: { title: "Model Name Or Path", type: "string", minLength: 1, ...words("基座模型", "Base model") },
    train_data_path: { title: "Train Data Path", type: "string", minLength: 1, ...words("训练数据", "Training data") },
    learning_rate: { title: "Learning Rate", type: "number", default: 5e-5, ...words("学习率", "Learning rate") },
  },
  [TYPE_TEXTS]: card,
});

const template = (type: string, card: Record<string, string>) => ({
  type,
  name: type,
  description: "API description",
  builtin: true,
  default_config: { model_name_or_path: "gpt2", train_data_path: "data/train.jsonl" },
  json_schema: schema(card),
  data_example: {},
});

const sft = { title_zh: "监督微调 SFT", title_en: "Supervised fine-tuning (SFT)", summary_zh: "监督微调简介", summary_en: "SFT summary" };
const dpo = { title_zh: "偏好优化 DPO", title_en: "Preference optimization (DPO)", summary_zh: "偏好简介", summary_en: "DPO summary" };

beforeEach(() => setToken("tok"));
afterEach(() => vi.unstubAllGlobals());

function renderPage(lang: Lang = "zh", state?: unknown) {
  const calls = stubFetchRoutes({
    "/api/finetune/templates": { json: { templates: [template("sft", sft), template("dpo", dpo)] } },
    "/api/finetune/datasets": { json: { datasets: [] } },
    "POST /api/finetune/start": { status: 201, json: { id: "t-new", type: "sft", status: "queued" } },
  });
  const view = renderWithI18n(
    <MemoryRouter initialEntries={[{ pathname: "/finetune", search: "?type=sft", state }]}>
      <FinetunePage />
    </MemoryRouter>,
    lang,
  );
  return { calls, view };
}

const input = (field: string) => document.getElementById(`field-${field}`) as HTMLInputElement;
const title = (field: string) => document.querySelector(`[data-field='${field}'] .field-title`)?.textContent;
const help = (field: string) => document.getElementById(`field-${field}-help`)?.textContent;
const formReady = () => waitFor(() => expect(input("model_name_or_path")?.value).toBe("gpt2"));

describe("FinetunePage language and drafts", () => {
  it("labels fields and type cards in Chinese, and in English when the UI is English", async () => {
    const { view } = renderPage("zh");
    await formReady();
    expect(title("learning_rate")).toBe("学习率");
    expect(help("learning_rate")).toContain("学习率的说明");
    expect([...document.querySelectorAll(".type-name")].map((e) => e.textContent)).toEqual(["监督微调 SFT", "偏好优化 DPO"]);
    expect(screen.getByText("监督微调简介")).toBeTruthy();
    view.unmount();

    renderPage("en");
    await formReady();
    expect(title("learning_rate")).toBe("Learning rate");
    expect(help("learning_rate")).toContain("Learning rate help");
    expect(screen.getByText("Preference optimization (DPO)")).toBeTruthy();
  });

  it("keeps an edit across leaving the page, until it is discarded", async () => {
    const { view } = renderPage();
    await formReady();
    expect(screen.queryByTestId("draft-restored")).toBeNull();
    fireEvent.change(input("learning_rate"), { target: { value: "1e-3" } });
    view.unmount();

    const again = renderPage();
    await waitFor(() => expect(input("learning_rate")?.value).toBe("1e-3"));
    expect(input("model_name_or_path").value).toBe("gpt2");
    fireEvent.click(screen.getByTestId("discard-draft"));
    expect(input("learning_rate").value).toBe("0.00005");
    expect(screen.queryByTestId("draft-restored")).toBeNull();
    again.view.unmount();

    renderPage();
    await formReady();
    expect(input("learning_rate").value).toBe("0.00005");
  });

  it("a clone's config wins over the draft and becomes it", async () => {
    const first = renderPage();
    await formReady();
    fireEvent.change(input("learning_rate"), { target: { value: "1e-3" } });
    first.view.unmount();

    const prefill = { kind: "clone", from: "t-old", type: "sft", config: { model_name_or_path: "m2", train_data_path: "d", learning_rate: 0.02 } };
    const cloned = renderPage("zh", { prefill });
    await waitFor(() => expect(input("learning_rate")?.value).toBe("0.02"));
    expect(input("model_name_or_path").value).toBe("m2");
    cloned.view.unmount();

    renderPage();
    await waitFor(() => expect(input("learning_rate")?.value).toBe("0.02"));
  });

  it("starting the task clears the draft", async () => {
    const first = renderPage();
    await formReady();
    fireEvent.change(input("learning_rate"), { target: { value: "1e-3" } });
    fireEvent.click(screen.getByTestId("start"));
    await waitFor(() => expect(first.calls.some((c) => c.url === "/api/finetune/start")).toBe(true));
    const start = first.calls.find((c) => c.url === "/api/finetune/start")!;
    expect(start.body).toMatchObject({ type: "sft", config: { learning_rate: 0.001 } });
    await waitFor(() => expect(Object.keys(localStorage).filter((k) => k.startsWith("bugagaric.draft"))).toEqual([]));
    first.view.unmount();

    renderPage();
    await formReady();
    expect(input("learning_rate").value).toBe("0.00005");
  });
});
