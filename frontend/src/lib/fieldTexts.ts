// The form's and the type cards' words in the console's language. Each field and each task type carries its own
// Chinese and English texts in its spec (trainers/common/field_texts.py, TaskType.title_zh/...), delivered in the
// type's JSON schema; a type without them (a plugin) falls back to the other language, then to what pydantic says.

import type { JsonSchema, TypeTemplate } from "../api/types";
import type { Lang } from "../i18n";
import type { FieldSpec } from "../schema/form";

/** The schema key of a type's card texts (trainers/registry.py TYPE_TEXTS). */
export const TYPE_TEXTS = "x-task-type";

function pick(lang: Lang, zh: unknown, en: unknown): string | undefined {
  const [first, second] = lang === "zh" ? [zh, en] : [en, zh];
  for (const value of [first, second]) if (typeof value === "string" && value.trim()) return value;
  return undefined;
}

/** The label of a field: its title in the UI language, else in the other one, else pydantic's title. */
export function fieldTitle(field: FieldSpec, lang: Lang): string {
  return pick(lang, field.texts.title_zh, field.texts.title_en) ?? field.title ?? field.name;
}

/** The help under a field: its help in the UI language, else in the other one, else the schema's description. */
export function fieldHelp(field: FieldSpec, lang: Lang): string {
  return pick(lang, field.texts.help_zh, field.texts.help_en) ?? field.description;
}

export interface TypeCard {
  name: string;
  summary: string;
}

/** A task type's card: its human name and short summary in the UI language (else its key and API description). */
export function typeCard(template: Pick<TypeTemplate, "type" | "name" | "description" | "json_schema">, lang: Lang): TypeCard {
  const raw = (template.json_schema as JsonSchema | undefined)?.[TYPE_TEXTS];
  const texts = raw && typeof raw === "object" ? (raw as Record<string, unknown>) : {};
  return {
    name: pick(lang, texts.title_zh, texts.title_en) ?? (template.name || template.type),
    summary: pick(lang, texts.summary_zh, texts.summary_en) ?? template.description,
  };
}
