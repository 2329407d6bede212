// The task form's unsaved edits, one draft per user and task type, kept in localStorage so they survive navigating
// away (and a reload) until the task is started or the user discards them. A prefill from a task ("clone",
// "continue training", lib/prefill.ts) wins over the draft and becomes it.

import type { FieldSpec, FormValues } from "../schema/form";

const PREFIX = "bugagaric.draft";

/** The storage key of a user's draft of a type: the pair as JSON, so no user name can spell another's key. */
export function draftKey(user: string | null | undefined, type: string): string {
  return `${PREFIX}:${JSON.stringify([user ?? "", type])}`;
}

/** Only what an input can hold: strings and booleans (anything else in storage is not ours, or stale). */
function isValues(value: unknown): value is FormValues {
  if (!value || typeof value !== "object" || Array.isArray(value)) return false;
  return Object.values(value).every((v) => typeof v === "string" || typeof v === "boolean");
}

export function loadDraft(user: string | null | undefined, type: string): FormValues | null {
  try {
    const raw = localStorage.getItem(draftKey(user, type));
    const parsed: unknown = raw ? JSON.parse(raw) : null;
    return isValues(parsed) ? parsed : null;
  } catch {
    return null; // unreadable JSON, or storage unavailable: no draft
  }
}

export function saveDraft(user: string | null | undefined, type: string, values: FormValues): void {
  try {
    localStorage.setItem(draftKey(user, type), JSON.stringify(values));
  } catch {
    /* storage full or unavailable: the draft lives as long as the page */
  }
}

export function clearDraft(user: string | null | undefined, type: string): void {
  try {
    localStorage.removeItem(draftKey(user, type));
  } catch {
    /* nothing to clear */
  }
}

/**
 * The values the form opens with for a type: a draft's values over the defaults, for the fields the type has now
 * (a field added since the draft was saved gets its default; one removed since is dropped).
 */
export function withDraft(fields: FieldSpec[], defaults: FormValues, draft: FormValues | null): FormValues {
  if (!draft) return defaults;
  const values: FormValues = { ...defaults };
  for (const field of fields) {
    const value = draft[field.name];
    if (value === undefined) continue;
    // A value of the wrong kind (a field whose type changed) keeps the default.
    if ((field.kind === "boolean") === (typeof value === "boolean")) values[field.name] = value;
  }
  return values;
}

/** Whether the values differ from the defaults (a draft worth keeping and announcing). */
export function isEdited(values: FormValues, defaults: FormValues): boolean {
  return Object.keys({ ...values, ...defaults }).some((key) => (values[key] ?? "") !== (defaults[key] ?? ""));
}
