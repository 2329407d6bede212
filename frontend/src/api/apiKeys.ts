// The caller's API keys (gateway/api_key_routes.py): create (the key is in that answer only), list, revoke.
import { request } from "./client";
import type { components } from "./schema";

type Schemas = components["schemas"];

export const API_KEY_SCOPES = ["read", "submit", "admin"] as const;
export type ApiKeyScope = (typeof API_KEY_SCOPES)[number];

// Generated from the OpenAPI document (schema.d.ts): `prefix` is the key's first characters, to tell keys apart (not
// a secret); a CreatedApiKey also carries `key`, the bearer credential, shown this once.
export type ApiKeyInfo = Schemas["ApiKeyInfo"];
export type CreatedApiKey = Schemas["CreatedApiKey"];

export const apiKeys = {
  list: (signal?: AbortSignal) => request<{ keys: ApiKeyInfo[] }>("/auth/keys", { signal }),
  create: (name: string, scopes: string[]) =>
    request<CreatedApiKey>("/auth/keys", { method: "POST", body: { name, scopes } }),
  remove: (id: string) => request<{ deleted: string }>(`/auth/keys/${encodeURIComponent(id)}`, { method: "DELETE" }),
};
