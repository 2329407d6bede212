import { describe, expect, it } from "vitest";
import type { JsonSchema, TypeTemplate } from "../api/types";
import { fieldsFromSchema, initialValues } from "../schema/form";
import { fieldHelp, fieldTitle, typeCard, TYPE_TEXTS } from "./fieldTexts";

const schema: JsonSchema = {
  type: "object",
  properties: {
    learning_rate: {
      type: "number",
      title: "Learning Rate",
      description: "Peak learning rate.",
      title_zh: "学习率",
      title_en: "Learning rate",
      help_zh: "峰值学习率。",
      help_en: "Peak learning rate.",
    },
    only_english: { type: "string", title: "Only English", description: "Desc.", title_en: "English title" },
    bare: { type: "string", title: "Bare", description: "Bare desc." },
    train_data_path: { anyOf: [{ type: "string" }, { type: "null" }], default: null, alias_of: "train_data" },
    train_data: { anyOf: [{ type: "string" }, { type: "null" }], default: null, title_zh: "训练数据" },
  },
  [TYPE_TEXTS]: { title_zh: "监督微调 SFT", title_en: "Supervised fine-tuning (SFT)", summary_zh: "中文简介", summary_en: "Summary" },
};
const fields = fieldsFromSchema(schema);
const field = (name: string) => fields.find((f) => f.name === name)!;

describe("field texts", () => {
  it("shows the field's title and help in the UI language", () => {
    expect(fieldTitle(field("learning_rate"), "zh")).toBe("学习率");
    expect(fieldHelp(field("learning_rate"), "zh")).toBe("峰值学习率。");
    expect(fieldTitle(field("learning_rate"), "en")).toBe("Learning rate");
    expect(fieldHelp(field("learning_rate"), "en")).toBe("Peak learning rate.");
  });

  it("falls back to the other language, then to the schema's title and description", () => {
    expect(fieldTitle(field("only_english"), "zh")).toBe("English title");
    expect(fieldHelp(field("only_english"), "zh")).toBe("Desc.");
    expect(fieldTitle(field("bare"), "zh")).toBe("Bare");
    expect(fieldHelp(field("bare"), "en")).toBe("Bare desc.");
    expect(fieldTitle(field("train_data"), "en")).toBe("训练数据");
  });

  it("shows an alias once, as the field it names, and reads a config that used the alias", () => {
    expect(fields.map((f) => f.name)).toEqual(["learning_rate", "only_english", "bare", "train_data"]);
    expect(field("train_data").aliases).toEqual(["train_data_path"]);
    expect(initialValues(fields, { train_data_path: "dataset:d1" }).train_data).toBe("dataset:d1");
    expect(initialValues(fields, { train_data: null, train_data_path: "dataset:d1" }).train_data).toBe("dataset:d1");
    expect(initialValues(fields, { train_data: "a.jsonl", train_data_path: null }).train_data).toBe("a.jsonl");
  });

  it("names a type card in the UI language, falling back to the type's key and description", () => {
    const tpl = { type: "sft", name: "sft", description: "API description", json_schema: schema } as TypeTemplate;
    expect(typeCard(tpl, "zh")).toEqual({ name: "监督微调 SFT", summary: "中文简介" });
    expect(typeCard(tpl, "en")).toEqual({ name: "Supervised fine-tuning (SFT)", summary: "Summary" });
    const plugin = { type: "qa", name: "qa", description: "A plugin type.", json_schema: { type: "object" } } as TypeTemplate;
    expect(typeCard(plugin, "zh")).toEqual({ name: "qa", summary: "A plugin type." });
  });
});
