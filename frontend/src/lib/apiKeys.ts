// The API key form's checks (the same as the control plane's, so the common mistakes are caught before a call) and
// what a scope selection means.
import { API_KEY_SCOPES, type ApiKeyScope } from "../api/apiKeys";
import type { MessageKey } from "../i18n";

export const MAX_KEY_NAME = 100;

export interface KeyFormProblem {
  field: "name" | "scopes";
  message: MessageKey;
}

export function keyFormProblem(name: string, scopes: readonly string[]): KeyFormProblem | null {
  const trimmed = name.trim();
  if (!trimmed) return { field: "name", message: "settings.keys.nameRequired" };
  if (trimmed.length > MAX_KEY_NAME) return { field: "name", message: "settings.keys.nameTooLong" };
  if (!scopes.some((scope) => (API_KEY_SCOPES as readonly string[]).includes(scope)))
    return { field: "scopes", message: "settings.keys.scopeRequired" };
  return null;
}

/** Scopes nest: submit includes read, admin both. */
const INCLUDES: Record<ApiKeyScope, ApiKeyScope[]> = {
  read: ["read"],
  submit: ["read", "submit"],
  admin: ["read", "submit", "admin"],
};

/** Every scope the chosen ones grant, narrowest first (what a checked "admin" also checks, greyed out). */
export function grantedScopes(chosen: readonly string[]): ApiKeyScope[] {
  const granted = new Set<ApiKeyScope>();
  for (const scope of chosen) for (const included of INCLUDES[scope as ApiKeyScope] ?? []) granted.add(included);
  return API_KEY_SCOPES.filter((scope) => granted.has(scope));
}

/** A checkbox change: the chosen scopes in their canonical order. Checking a scope drops the ones it includes (they
 * show as granted, not chosen), so the key is sent with the scopes that mean something. */
export function toggleScope(chosen: readonly string[], scope: ApiKeyScope, on: boolean): ApiKeyScope[] {
  const next = new Set(chosen.filter((s): s is ApiKeyScope => (API_KEY_SCOPES as readonly string[]).includes(s)));
  if (on) {
    for (const included of INCLUDES[scope]) next.delete(included);
    next.add(scope);
  } else next.delete(scope);
  return API_KEY_SCOPES.filter((s) => next.has(s));
}
