// A fetch stand-in answering by "METHOD /path" (or just "/path" for any method) with JSON, recording each call.
import { vi } from "vitest";

export interface FetchCall {
  method: string;
  url: string;
  headers: Record<string, string>;
  body: unknown;
}

export type Reply = { status?: number; json?: unknown; body?: BodyInit; headers?: Record<string, string> };
export type Handler = Reply | ((call: FetchCall) => Reply);

export function stubFetchRoutes(routes: Record<string, Handler>): FetchCall[] {
  const calls: FetchCall[] = [];
  vi.stubGlobal(
    "fetch",
    vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
      const url = String(input);
      const method = (init?.method ?? "GET").toUpperCase();
      const body = typeof init?.body === "string" ? JSON.parse(init.body) : init?.body;
      const call = { method, url, headers: { ...((init?.headers as Record<string, string>) ?? {}) }, body };
      calls.push(call);
      const path = url.split("?")[0];
      const handler = routes[`${method} ${path}`] ?? routes[path];
      if (!handler) return new Response(JSON.stringify({ error: { code: "not_found", message: path } }), { status: 404 });
      const reply = typeof handler === "function" ? handler(call) : handler;
      const headers = { "content-type": "application/json", ...(reply.headers ?? {}) };
      return new Response(reply.body ?? JSON.stringify(reply.json ?? {}), { status: reply.status ?? 200, headers });
    }),
  );
  return calls;
}
