import { fireEvent, screen } from "@testing-library/react";
import { useState } from "react";
import { describe, expect, it } from "vitest";
import type { JsonSchema } from "../api/types";
import { SchemaForm } from "../components/SchemaForm";
import { renderWithI18n } from "../test/render";
import {
  buildConfig,
  fieldKeyOf,
  fieldsFromSchema,
  initialValues,
  splitAdvanced,
  validateField,
  type FieldError,
  type FormValues,
} from "./form";

// The shape pydantic generates for the sft config (trimmed), incl. an `advanced` extra and `X | None` fields.
const schema: JsonSchema = {
  additionalProperties: false,
  title: "SftConfig",
  type: "object",
  required: ["model_name_or_path", "train_data_path"],
  properties: {
    model_name_or_path: { title: "Model Name Or Path", type: "string", minLength: 1, description: "Base model." },
    train_data_path: { title: "Train Data Path", type: "string", minLength: 1, description: "JSONL data." },
    output_dir: { anyOf: [{ type: "string" }, { type: "null" }], default: null, title: "Output Dir" },
    use_lora: { default: true, title: "Use Lora", type: "boolean" },
    learning_rate: { default: 5e-5, exclusiveMinimum: 0, title: "Learning Rate", type: "number" },
    per_device_train_batch_size: { default: 4, minimum: 1, title: "Per Device Train Batch Size", type: "integer" },
    max_steps: { default: -1, minimum: -1, title: "Max Steps", type: "integer" },
    gpu_vis: {
      advanced: true,
      anyOf: [{ pattern: "^\\s*\\d+(\\s*,\\s*\\d+)*\\s*$", type: "string" }, { type: "null" }],
      default: null,
      title: "Gpu Vis",
    },
    gpus: { advanced: true, anyOf: [{ minimum: 1, type: "integer" }, { type: "null" }], default: null, title: "Gpus" },
    warmup_ratio: { advanced: true, default: 0, exclusiveMaximum: 1, minimum: 0, title: "Warmup Ratio", type: "number" },
    lr_scheduler_type: {
      advanced: true,
      default: "linear",
      enum: ["linear", "cosine", "constant"],
      title: "Lr Scheduler Type",
      type: "string",
    },
    lora_dropout: { advanced: true, default: 0.05, maximum: 1, minimum: 0, title: "Lora Dropout", type: "number" },
    lora_target_modules: {
      advanced: true,
      anyOf: [{ items: { type: "string" }, type: "array" }, { type: "null" }],
      default: null,
      title: "Lora Target Modules",
    },
  },
};

const defaultConfig = { model_name_or_path: "microsoft/DialoGPT-medium", train_data_path: "data/train.jsonl", use_lora: true };

describe("fieldsFromSchema", () => {
  const fields = fieldsFromSchema(schema);
  const byName = Object.fromEntries(fields.map((f) => [f.name, f]));

  it("keeps the schema's order and reads kinds, required and defaults", () => {
    expect(fields.map((f) => f.name)).toEqual(Object.keys(schema.properties!));
    expect(byName.model_name_or_path).toMatchObject({ kind: "string", required: true, nullable: false, minLength: 1 });
    expect(byName.use_lora).toMatchObject({ kind: "boolean", default: true, required: false });
    expect(byName.learning_rate).toMatchObject({ kind: "number", exclusiveMinimum: 0, default: 5e-5 });
    expect(byName.per_device_train_batch_size).toMatchObject({ kind: "integer", minimum: 1 });
  });

  it("treats anyOf [X, null] as an optional X, keeping the inner constraints", () => {
    expect(byName.output_dir).toMatchObject({ kind: "string", nullable: true, required: false, default: null });
    expect(byName.gpus).toMatchObject({ kind: "integer", nullable: true, minimum: 1 });
    expect(byName.gpu_vis).toMatchObject({ kind: "string", nullable: true, pattern: "^\\s*\\d+(\\s*,\\s*\\d+)*\\s*$" });
    expect(byName.lora_target_modules).toMatchObject({ kind: "string-array", nullable: true });
  });

  it("reads enums and the advanced flag", () => {
    expect(byName.lr_scheduler_type).toMatchObject({ kind: "enum", enumValues: ["linear", "cosine", "constant"] });
    const { basic, advanced } = splitAdvanced(fields);
    expect(advanced.map((f) => f.name)).toEqual([
      "gpu_vis",
      "gpus",
      "warmup_ratio",
      "lr_scheduler_type",
      "lora_dropout",
      "lora_target_modules",
    ]);
    expect(basic.map((f) => f.name)).toContain("learning_rate");
  });

  it("resolves $ref into $defs (Literal/enum classes)", () => {
    const withRef: JsonSchema = {
      type: "object",
      $defs: { Precision: { enum: ["auto", "bf16"], type: "string" } },
      properties: { precision: { $ref: "#/$defs/Precision", default: "auto" } },
    };
    expect(fieldsFromSchema(withRef)[0]).toMatchObject({ kind: "enum", enumValues: ["auto", "bf16"], default: "auto" });
  });
});

describe("values and config", () => {
  const fields = fieldsFromSchema(schema);

  it("fills defaults from the schema, overridden by default_config", () => {
    const values = initialValues(fields, defaultConfig);
    expect(values.model_name_or_path).toBe("microsoft/DialoGPT-medium");
    expect(values.learning_rate).toBe("0.00005");
    expect(values.per_device_train_batch_size).toBe("4");
    expect(values.use_lora).toBe(true);
    expect(values.output_dir).toBe("");
    expect(values.lr_scheduler_type).toBe("linear");
    expect(values.lora_target_modules).toBe("");
  });

  it("builds a typed config: numbers, null for empty optional fields, arrays", () => {
    const values: FormValues = {
      ...initialValues(fields, defaultConfig),
      learning_rate: "5e-3",
      max_steps: "-1",
      lora_target_modules: "q_proj, v_proj",
      gpu_vis: "0,1",
    };
    const { config, errors } = buildConfig(fields, values);
    expect(errors).toEqual({});
    expect(config).toMatchObject({
      model_name_or_path: "microsoft/DialoGPT-medium",
      learning_rate: 0.005,
      per_device_train_batch_size: 4,
      max_steps: -1,
      output_dir: null,
      gpus: null,
      use_lora: true,
      lr_scheduler_type: "linear",
      lora_target_modules: ["q_proj", "v_proj"],
      gpu_vis: "0,1",
    });
    expect(typeof config.per_device_train_batch_size).toBe("number");
  });

  it("round-trips a saved config through the form", () => {
    const saved = { model_name_or_path: "/m", train_data_path: "d.jsonl", lora_target_modules: ["a", "b"], gpus: 2 };
    const values = initialValues(fields, defaultConfig, saved);
    const { config } = buildConfig(fields, values);
    expect(config).toMatchObject(saved);
  });

  it("validates required, numbers, integers, ranges, patterns and enums", () => {
    const f = Object.fromEntries(fields.map((x) => [x.name, x]));
    const code = (e: FieldError | null) => e?.code ?? null;
    expect(code(validateField(f.model_name_or_path, ""))).toBe("required");
    expect(code(validateField(f.model_name_or_path, "  "))).toBe("required");
    expect(code(validateField(f.output_dir, ""))).toBeNull();
    expect(code(validateField(f.learning_rate, "abc"))).toBe("notNumber");
    expect(code(validateField(f.learning_rate, "0"))).toBe("exclusiveMin");
    expect(validateField(f.learning_rate, "-1")).toEqual({ code: "exclusiveMin", limit: 0 });
    expect(code(validateField(f.learning_rate, "1e-4"))).toBeNull();
    expect(code(validateField(f.per_device_train_batch_size, "2.5"))).toBe("notInteger");
    expect(validateField(f.per_device_train_batch_size, "0")).toEqual({ code: "min", limit: 1 });
    expect(code(validateField(f.max_steps, "-2"))).toBe("min");
    expect(code(validateField(f.lora_dropout, "1.5"))).toBe("max");
    expect(code(validateField(f.warmup_ratio, "1"))).toBe("exclusiveMax");
    expect(code(validateField(f.gpus, "0"))).toBe("min");
    expect(code(validateField(f.gpus, ""))).toBeNull();
    expect(code(validateField(f.gpu_vis, "0,x"))).toBe("pattern");
    expect(code(validateField(f.gpu_vis, "0, 1"))).toBeNull();
    expect(code(validateField(f.lr_scheduler_type, "nope"))).toBe("enum");
  });

  it("maps a server error field to the form key", () => {
    expect(fieldKeyOf("learning_rate", fields)).toBe("learning_rate");
    expect(fieldKeyOf("lora_target_modules.0", fields)).toBe("lora_target_modules");
    expect(fieldKeyOf("config.gpus", fields)).toBe("gpus");
    expect(fieldKeyOf("type", fields)).toBeNull();
    expect(fieldKeyOf(null, fields)).toBeNull();
  });
});

function Harness() {
  const fields = fieldsFromSchema(schema);
  const [values, setValues] = useState<FormValues>(() => initialValues(fields, defaultConfig));
  const { errors } = buildConfig(fields, values);
  return (
    <SchemaForm
      fields={fields}
      values={values}
      errors={errors}
      onChange={(name, value) => setValues((v) => ({ ...v, [name]: value }))}
    />
  );
}

describe("<SchemaForm>", () => {
  it("renders basic fields with defaults and folds advanced ones under 高级参数", () => {
    renderWithI18n(<Harness />);
    expect((screen.getByLabelText(/Model Name Or Path/) as HTMLInputElement).value).toBe("microsoft/DialoGPT-medium");
    expect((screen.getByLabelText(/Learning Rate/) as HTMLInputElement).value).toBe("0.00005");
    expect((screen.getByLabelText(/Use Lora/) as HTMLInputElement).checked).toBe(true);
    // Advanced fields are folded away until opened.
    expect(screen.queryByLabelText(/Lr Scheduler Type/)).toBeNull();
    const toggle = screen.getByRole("button", { name: /高级参数/ });
    expect(toggle.getAttribute("aria-expanded")).toBe("false");
    fireEvent.click(toggle);
    const select = screen.getByLabelText(/Lr Scheduler Type/) as HTMLSelectElement;
    expect(select.value).toBe("linear");
    expect([...select.options].map((o) => o.value)).toEqual(["linear", "cosine", "constant"]);
    // An optional (anyOf null) enum-less field offers "leave empty for the default".
    expect((screen.getByLabelText(/Gpus/) as HTMLInputElement).placeholder).toBe("留空使用默认值");
  });

  it("shows inline messages for required and out-of-range values", () => {
    renderWithI18n(<Harness />);
    fireEvent.change(screen.getByLabelText(/Model Name Or Path/), { target: { value: "" } });
    expect(screen.getByText("此项为必填")).toBeTruthy();
    fireEvent.change(screen.getByLabelText(/Learning Rate/), { target: { value: "0" } });
    expect(screen.getByText("必须大于 0")).toBeTruthy();
    fireEvent.change(screen.getByLabelText(/Per Device Train Batch Size/), { target: { value: "1.5" } });
    expect(screen.getByText("请输入整数")).toBeTruthy();
    expect(screen.getByLabelText(/Learning Rate/).getAttribute("aria-invalid")).toBe("true");
  });

  it("unfolds the advanced section when an advanced field is invalid", () => {
    function Bad() {
      const fields = fieldsFromSchema(schema);
      return (
        <SchemaForm
          fields={fields}
          values={initialValues(fields, defaultConfig)}
          errors={{ gpus: { code: "min", message: "gpus: must be >= 1" } }}
          onChange={() => undefined}
        />
      );
    }
    renderWithI18n(<Bad />, "en");
    expect(screen.getByRole("button", { name: /Advanced parameters/ }).getAttribute("aria-expanded")).toBe("true");
    expect(screen.getByText("gpus: must be >= 1")).toBeTruthy();
  });
});
