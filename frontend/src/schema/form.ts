// Turns a task type's pydantic JSON schema into form fields, form values and a config, and validates values the
// way the server will (required, types, integer, ranges, lengths, pattern, enum) so users see mistakes before submit.

import type { JsonSchema } from "../api/types";

export type FieldKind = "string" | "number" | "integer" | "boolean" | "enum" | "string-array" | "json";

/** A field's words in both languages, from its spec (trainers/common/field_texts.py); lib/fieldTexts.ts picks one. */
export interface FieldTexts {
  title_zh?: string;
  title_en?: string;
  help_zh?: string;
  help_en?: string;
}

export interface FieldSpec {
  name: string;
  title: string;
  description: string;
  texts: FieldTexts;
  /** Other keys that name this same input (`"alias_of": name` in their schema): shown once, as this field. */
  aliases: string[];
  kind: FieldKind;
  required: boolean;
  /** anyOf [..., {"type": "null"}]: an empty input means null. */
  nullable: boolean;
  advanced: boolean;
  hasDefault: boolean;
  default: unknown;
  enumValues: unknown[];
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
}

/** What an input holds: text as typed (so "1e-3" or "" survive editing), booleans as booleans. */
export type FormValue = string | boolean;
export type FormValues = Record<string, FormValue>;

export type FieldErrorCode =
  | "required"
  | "notNumber"
  | "notInteger"
  | "min"
  | "max"
  | "exclusiveMin"
  | "exclusiveMax"
  | "minLength"
  | "maxLength"
  | "pattern"
  | "enum"
  | "json";

export interface FieldError {
  code: FieldErrorCode;
  /** The limit for range/length errors, the pattern for pattern errors. */
  limit?: number | string;
  /** A server message (400 with error.field) shown as is. */
  message?: string;
}

function resolveRef(schema: JsonSchema, root: JsonSchema): JsonSchema {
  let current = schema;
  for (let i = 0; i < 10 && current.$ref; i += 1) {
    const match = /^#\/(\$defs|definitions)\/(.+)$/.exec(current.$ref);
    const defs = match ? ((root[match[1]] as Record<string, JsonSchema> | undefined) ?? {}) : {};
    const target = match ? defs[decodeURIComponent(match[2])] : undefined;
    if (!target) break;
    const { $ref: _ignored, ...rest } = current;
    current = { ...target, ...rest };
  }
  return current;
}

function typesOf(schema: JsonSchema): string[] {
  if (Array.isArray(schema.type)) return schema.type;
  return schema.type ? [schema.type] : [];
}

function isNullSchema(schema: JsonSchema): boolean {
  const types = typesOf(schema);
  return (types.length === 1 && types[0] === "null") || (schema.const === null && types.length === 0);
}

function kindOf(schema: JsonSchema): FieldKind {
  if (Array.isArray(schema.enum) && schema.enum.length) return "enum";
  if (schema.const !== undefined) return "enum";
  const types = typesOf(schema).filter((t) => t !== "null");
  if (types.length !== 1) return "json";
  switch (types[0]) {
    case "string":
      return "string";
    case "number":
      return "number";
    case "integer":
      return "integer";
    case "boolean":
      return "boolean";
    case "array": {
      const items = schema.items;
      const itemTypes = items ? typesOf(items) : [];
      return itemTypes.length === 1 && itemTypes[0] === "string" && !items?.enum ? "string-array" : "json";
    }
    default:
      return "json";
  }
}

/** One property of the schema -> a field. */
export function fieldFromProperty(name: string, raw: JsonSchema, required: boolean, root: JsonSchema): FieldSpec {
  const outer = resolveRef(raw, root);
  let inner: JsonSchema = outer;
  let nullable = typesOf(outer).includes("null");
  const variants = outer.anyOf ?? outer.oneOf;
  if (variants && variants.length) {
    const resolved = variants.map((v) => resolveRef(v, root));
    const nonNull = resolved.filter((v) => !isNullSchema(v));
    nullable = nullable || nonNull.length < resolved.length;
    // One real alternative (pydantic's `X | None`): the field is that type, optional.
    inner = nonNull.length === 1 ? { ...nonNull[0] } : { type: "object" };
  } else if (outer.allOf && outer.allOf.length === 1) {
    inner = resolveRef(outer.allOf[0], root);
  }
  const pick = <K extends keyof JsonSchema>(key: K): JsonSchema[K] => (inner[key] ?? outer[key]) as JsonSchema[K];
  const hasDefault = Object.prototype.hasOwnProperty.call(outer, "default");
  const enumValues = Array.isArray(inner.enum) ? inner.enum : inner.const !== undefined ? [inner.const] : [];
  const text = (key: keyof FieldTexts) => {
    const value = outer[key] ?? inner[key];
    return typeof value === "string" && value.trim() ? value : undefined;
  };
  return {
    name,
    title: (outer.title as string | undefined) ?? (inner.title as string | undefined) ?? name,
    description: (outer.description as string | undefined) ?? (inner.description as string | undefined) ?? "",
    texts: { title_zh: text("title_zh"), title_en: text("title_en"), help_zh: text("help_zh"), help_en: text("help_en") },
    aliases: [],
    kind: kindOf(inner),
    required,
    nullable,
    advanced: outer.advanced === true || inner.advanced === true,
    hasDefault,
    default: hasDefault ? outer.default : undefined,
    enumValues,
    minimum: pick("minimum"),
    maximum: pick("maximum"),
    exclusiveMinimum: pick("exclusiveMinimum"),
    exclusiveMaximum: pick("exclusiveMaximum"),
    minLength: pick("minLength"),
    maxLength: pick("maxLength"),
    pattern: pick("pattern"),
  };
}

/** All fields of an object schema, in the schema's order; an alias (`"alias_of"`) folds into the field it names. */
export function fieldsFromSchema(schema: JsonSchema | null | undefined): FieldSpec[] {
  if (!schema) return [];
  const root = schema;
  const top = resolveRef(schema, root);
  const required = new Set(top.required ?? []);
  const properties = Object.entries(top.properties ?? {});
  const fields = properties.map(([name, prop]) => fieldFromProperty(name, prop, required.has(name), root));
  const byName = new Map(fields.map((f) => [f.name, f]));
  const aliasOf = (prop: JsonSchema) => (typeof prop.alias_of === "string" ? byName.get(prop.alias_of) : undefined);
  for (const [name, prop] of properties) aliasOf(prop)?.aliases.push(name);
  return fields.filter((_, i) => !aliasOf(properties[i][1]));
}

/** A config's value for a field: its own key, else one of its aliases'. */
function configValue(field: FieldSpec, config: Record<string, unknown>): { found: boolean; value?: unknown } {
  for (const key of [field.name, ...field.aliases]) {
    if (Object.prototype.hasOwnProperty.call(config, key) && config[key] !== null) return { found: true, value: config[key] };
  }
  return Object.prototype.hasOwnProperty.call(config, field.name) ? { found: true, value: null } : { found: false };
}

/** A config value -> what its input shows. */
export function toFormValue(field: FieldSpec, value: unknown): FormValue {
  if (field.kind === "boolean") return value === true;
  if (value === null || value === undefined) return "";
  switch (field.kind) {
    case "string-array":
      return Array.isArray(value) ? value.map(String).join(", ") : String(value);
    case "json":
      return typeof value === "string" ? value : JSON.stringify(value);
    case "enum":
      return typeof value === "string" ? value : JSON.stringify(value);
    case "number":
    case "integer":
      return typeof value === "number" ? String(value) : String(value);
    default:
      return String(value);
  }
}

/** Initial values: the schema's defaults, overridden by the type's default config (then by a loaded template). */
export function initialValues(fields: FieldSpec[], ...configs: Array<Record<string, unknown> | null | undefined>): FormValues {
  const values: FormValues = {};
  for (const field of fields) {
    let value: unknown = field.hasDefault ? field.default : undefined;
    for (const config of configs) {
      const given = config ? configValue(field, config) : { found: false };
      if (given.found) value = given.value;
    }
    values[field.name] = toFormValue(field, value);
  }
  return values;
}

const NUMBER_RE = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

function enumValueFromText(field: FieldSpec, text: string): unknown {
  for (const option of field.enumValues) {
    const shown = typeof option === "string" ? option : JSON.stringify(option);
    if (shown === text) return option;
  }
  return undefined;
}

type Parsed = { ok: true; value: unknown; empty: boolean } | { ok: false; error: FieldError };

/** An input's value -> the config value, or the first problem with it. */
export function parseField(field: FieldSpec, raw: FormValue | undefined): Parsed {
  if (field.kind === "boolean") return { ok: true, value: raw === true, empty: false };
  const text = typeof raw === "string" ? raw.trim() : "";
  if (text === "") {
    if (field.required) return { ok: false, error: { code: "required" } };
    return { ok: true, value: field.nullable ? null : undefined, empty: true };
  }
  let value: unknown;
  switch (field.kind) {
    case "number":
    case "integer": {
      if (!NUMBER_RE.test(text)) return { ok: false, error: { code: "notNumber" } };
      const num = Number(text);
      if (!Number.isFinite(num)) return { ok: false, error: { code: "notNumber" } };
      if (field.kind === "integer" && !Number.isInteger(num)) return { ok: false, error: { code: "notInteger" } };
      if (field.minimum !== undefined && num < field.minimum) return { ok: false, error: { code: "min", limit: field.minimum } };
      if (field.maximum !== undefined && num > field.maximum) return { ok: false, error: { code: "max", limit: field.maximum } };
      if (field.exclusiveMinimum !== undefined && num <= field.exclusiveMinimum)
        return { ok: false, error: { code: "exclusiveMin", limit: field.exclusiveMinimum } };
      if (field.exclusiveMaximum !== undefined && num >= field.exclusiveMaximum)
        return { ok: false, error: { code: "exclusiveMax", limit: field.exclusiveMaximum } };
      value = num;
      break;
    }
    case "enum": {
      value = enumValueFromText(field, text);
      if (value === undefined) return { ok: false, error: { code: "enum" } };
      break;
    }
    case "string-array": {
      const items = text
        .split(/[,\n]/)
        .map((s) => s.trim())
        .filter(Boolean);
      value = items;
      break;
    }
    case "json": {
      try {
        value = JSON.parse(text);
      } catch {
        return { ok: false, error: { code: "json" } };
      }
      break;
    }
    default: {
      // Strings are sent as typed (pydantic does not strip them either), only checked trimmed for emptiness.
      const str = typeof raw === "string" ? raw : "";
      if (field.minLength !== undefined && str.length < field.minLength)
        return { ok: false, error: { code: "minLength", limit: field.minLength } };
      if (field.maxLength !== undefined && str.length > field.maxLength)
        return { ok: false, error: { code: "maxLength", limit: field.maxLength } };
      if (field.pattern) {
        let re: RegExp | null = null;
        try {
          re = new RegExp(field.pattern, "u");
        } catch {
          re = null; // a Python-only construct: leave it to the server
        }
        if (re && !re.test(str)) return { ok: false, error: { code: "pattern", limit: field.pattern } };
      }
      value = str;
    }
  }
  return { ok: true, value, empty: false };
}

export interface BuildResult {
  config: Record<string, unknown>;
  errors: Record<string, FieldError>;
}

/**
 * Form values -> the config sent to the server, plus per-field errors. Empty optional fields are sent as null when
 * the schema allows null, and left out otherwise (the server applies its default).
 */
export function buildConfig(fields: FieldSpec[], values: FormValues): BuildResult {
  const config: Record<string, unknown> = {};
  const errors: Record<string, FieldError> = {};
  for (const field of fields) {
    const parsed = parseField(field, values[field.name]);
    if (!parsed.ok) {
      errors[field.name] = parsed.error;
      continue;
    }
    if (parsed.value !== undefined) config[field.name] = parsed.value;
  }
  return { config, errors };
}

export function validateField(field: FieldSpec, raw: FormValue | undefined): FieldError | null {
  const parsed = parseField(field, raw);
  return parsed.ok ? null : parsed.error;
}

/** Basic fields first, advanced ones (`"advanced": true`) folded under "高级参数". */
export function splitAdvanced(fields: FieldSpec[]): { basic: FieldSpec[]; advanced: FieldSpec[] } {
  return { basic: fields.filter((f) => !f.advanced), advanced: fields.filter((f) => f.advanced) };
}

/** The top-level key a server error names: "lora_target_modules.0" -> "lora_target_modules". */
export function fieldKeyOf(field: string | null | undefined, fields: FieldSpec[]): string | null {
  if (!field) return null;
  const cleaned = field.replace(/^config\./, "");
  const names = new Set(fields.map((f) => f.name));
  if (names.has(cleaned)) return cleaned;
  const head = cleaned.split(/[.[]/)[0];
  return names.has(head) ? head : null;
}
