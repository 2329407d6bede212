// The caller's webhook endpoints (gateway/webhook_routes.py): add one (its signing secret is in that answer only),
// list, delete, and an endpoint's delivery log. The shapes are the generated schema's.
import { request } from "./client";
import type { components } from "./schema";

type Schemas = components["schemas"];

export const WEBHOOK_EVENTS = ["task.started", "task.succeeded", "task.failed", "task.stopped"] as const;
export type WebhookEvent = (typeof WEBHOOK_EVENTS)[number];

export type WebhookInfo = Schemas["WebhookInfo"];
export type CreatedWebhook = Schemas["CreatedWebhook"];
export type WebhookDelivery = Schemas["WebhookDelivery"];
export type WebhookAttempt = Schemas["WebhookAttempt"];

export const webhooks = {
  list: (signal?: AbortSignal) => request<Schemas["WebhookList"]>("/webhooks", { signal }),
  create: (url: string, events: string[], description: string) =>
    request<CreatedWebhook>("/webhooks", {
      method: "POST",
      body: { url, events, ...(description ? { description } : {}) },
    }),
  remove: (id: string) => request<{ deleted: string }>(`/webhooks/${encodeURIComponent(id)}`, { method: "DELETE" }),
  deliveries: (id: string, limit = 50, signal?: AbortSignal) =>
    request<Schemas["WebhookDeliveryList"]>(`/webhooks/${encodeURIComponent(id)}/deliveries`, {
      query: { limit },
      signal,
    }),
};
