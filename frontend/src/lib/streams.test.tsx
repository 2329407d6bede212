// The task monitor's live hooks over a fake fetch: lines and metrics from the SSE streams, resume after a drop,
// the server's `error` event, the polling fallback and abort on unmount.
import { act, renderHook, waitFor } from "@testing-library/react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { setToken, setUnauthorizedHandler } from "../api/client";
import type { LogLine, Task } from "../api/types";
import { useLogLines, useTaskLive } from "./streams";

const TOKEN = "tok-abc";
const encoder = new TextEncoder();

interface Call {
  url: string;
  headers: Record<string, string>;
  signal: AbortSignal | null | undefined;
}

type Route = (call: Call) => Response | Promise<Response>;

/** Replies per URL path (a list is used up in order, its last entry then repeats). */
function routeFetch(routes: Record<string, Route | Route[]>) {
  const calls: Call[] = [];
  const fn = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = String(input);
    const call: Call = { url, headers: { ...((init?.headers as Record<string, string>) ?? {}) }, signal: init?.signal };
    calls.push(call);
    const path = url.split("?")[0];
    const route = routes[path];
    if (!route) throw new TypeError(`no route for ${path}`);
    const reply = Array.isArray(route) ? (route.length > 1 ? route.shift()! : route[0]) : route;
    return reply(call);
  });
  vi.stubGlobal("fetch", fn);
  return calls;
}

const json =
  (data: unknown, status = 200): Route =>
  () =>
    new Response(JSON.stringify(data), { status, headers: { "content-type": "application/json" } });

/** An event stream: writes `text`, then closes unless `keepOpen`; the body errors when the request aborts. */
function sse(text: string, { keepOpen = false } = {}): Route {
  return (call) => {
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(encoder.encode(text));
        if (!keepOpen) c.close();
        call.signal?.addEventListener("abort", () => {
          try {
            c.error(new DOMException("aborted", "AbortError"));
          } catch {
            /* closed */
          }
        });
      },
    });
    return new Response(stream, { status: 200, headers: { "content-type": "text/event-stream" } });
  };
}

const line = (seq: number): LogLine => ({ seq, time: null, stream: "stdout", text: `line ${seq}` });
const lineEvent = (seq: number) => `id: ${seq}\ndata: ${JSON.stringify(line(seq))}\n\n`;
const task = (status: string): Task => ({ id: "t1", type: "sft", status, config: {} }) as unknown as Task;

const LOGS = "/api/finetune/tasks/t1/logs/stream";
const EVENTS = "/api/finetune/tasks/t1/events/stream";

beforeEach(() => setToken(TOKEN));
afterEach(() => {
  vi.unstubAllGlobals();
  setUnauthorizedHandler(null);
});

function noTokenInUrls(calls: Call[]) {
  for (const call of calls) {
    expect(call.url).not.toContain("access_token");
    expect(call.url).not.toContain(TOKEN);
    expect(call.headers.Authorization).toBe(`Bearer ${TOKEN}`);
  }
}

describe("useLogLines", () => {
  it("streams lines, resumes after a drop with Last-Event-ID, drops replays, ends on `end`", async () => {
    const calls = routeFetch({
      [LOGS]: [
        sse(lineEvent(1) + lineEvent(2)), // then the connection drops
        sse(lineEvent(2) + lineEvent(3) + "event: end\ndata: {}\n\n"), // a replayed line 2
      ],
    });
    const { result } = renderHook(() => useLogLines("t1", false));
    await waitFor(() => expect(result.current.mode).toBe("ended"), { timeout: 4000 });
    expect(result.current.lines.map((l) => l.seq)).toEqual([1, 2, 3]);
    expect(calls).toHaveLength(2);
    expect(calls[0].url).toBe(`${LOGS}?after_seq=0`);
    expect(calls[0].headers["Last-Event-ID"]).toBeUndefined();
    expect(calls[1].url).toBe(`${LOGS}?after_seq=2`);
    expect(calls[1].headers["Last-Event-ID"]).toBe("2");
    noTokenInUrls(calls);
  });

  it("shows an `error` event's message and stops", async () => {
    const error = { error: { code: "not_found", message: "task t1 was deleted", field: null } };
    const calls = routeFetch({ [LOGS]: [sse(lineEvent(1) + `event: error\ndata: ${JSON.stringify(error)}\n\n`)] });
    const { result } = renderHook(() => useLogLines("t1", false));
    await waitFor(() => expect(result.current.mode).toBe("failed"));
    expect(result.current.error).toMatchObject({ status: 404, code: "not_found", message: "task t1 was deleted" });
    expect(result.current.lines.map((l) => l.seq)).toEqual([1]);
    await new Promise((r) => setTimeout(r, 50));
    expect(calls).toHaveLength(1);
  });

  it("falls back to polling when the stream route is refused", async () => {
    const calls = routeFetch({
      [LOGS]: json({ detail: "Not Found" }, 404),
      "/api/finetune/tasks/t1/logs": json({ task_id: "t1", lines: [line(1), line(2)], last_seq: 2 }),
    });
    const { result } = renderHook(() => useLogLines("t1", false));
    await waitFor(() => expect(result.current.mode).toBe("polling"));
    await waitFor(() => expect(result.current.lines.map((l) => l.seq)).toEqual([1, 2]));
    expect(calls.some((c) => c.url.startsWith("/api/finetune/tasks/t1/logs?"))).toBe(true);
    noTokenInUrls(calls);
  });

  it("aborts the stream on unmount", async () => {
    const calls = routeFetch({ [LOGS]: sse(lineEvent(1), { keepOpen: true }) });
    const { result, unmount } = renderHook(() => useLogLines("t1", false));
    await waitFor(() => expect(result.current.mode).toBe("live"));
    expect(calls[0].signal?.aborted).toBe(false);
    unmount();
    expect(calls[0].signal?.aborted).toBe(true);
    await new Promise((r) => setTimeout(r, 20));
    expect(calls).toHaveLength(1);
  });
});

describe("useTaskLive", () => {
  it("follows task and metric events to `end`", async () => {
    const point = { seq: 1, time: null, step: 1, loss: 0.5 };
    const calls = routeFetch({
      "/api/finetune/tasks/t1": [json(task("running")), json(task("succeeded"))],
      "/api/finetune/tasks/t1/metrics": json({ task_id: "t1", points: [] }),
      [EVENTS]: sse(
        `event: task\ndata: ${JSON.stringify(task("running"))}\n\n` +
          `event: metric\nid: 1\ndata: ${JSON.stringify(point)}\n\n` +
          `event: task\ndata: ${JSON.stringify(task("succeeded"))}\n\n` +
          `event: end\ndata: {"task_id":"t1","status":"succeeded"}\n\n`,
      ),
    });
    const { result } = renderHook(() => useTaskLive("t1"));
    await waitFor(() => expect(result.current.mode).toBe("ended"));
    expect(result.current.task?.status).toBe("succeeded");
    expect(result.current.points.map((p) => p.seq)).toEqual([1]);
    expect(result.current.error).toBeNull();
    noTokenInUrls(calls);
  });

  it("an `unauthenticated` error event goes to the login page (the 401 handler)", async () => {
    const onUnauthorized = vi.fn();
    setUnauthorizedHandler(onUnauthorized);
    routeFetch({
      "/api/finetune/tasks/t1": json(task("running")),
      "/api/finetune/tasks/t1/metrics": json({ task_id: "t1", points: [] }),
      [EVENTS]: sse('event: error\ndata: {"error":{"code":"unauthenticated","message":"token revoked","field":null}}\n\n'),
    });
    const { result } = renderHook(() => useTaskLive("t1"));
    await waitFor(() => expect(onUnauthorized).toHaveBeenCalledTimes(1));
    await waitFor(() => expect(result.current.mode).toBe("failed"));
    expect(result.current.streamError).toBeNull();
  });

  it("a `not_found` error event says the task is gone; another code is shown as a stream error", async () => {
    routeFetch({
      "/api/finetune/tasks/t1": json(task("running")),
      "/api/finetune/tasks/t1/metrics": json({ task_id: "t1", points: [] }),
      [EVENTS]: [
        sse('event: error\ndata: {"error":{"code":"not_found","message":"task t1 not found","field":null}}\n\n'),
        sse('event: error\ndata: {"error":{"code":"internal","message":"boom","field":null}}\n\n'),
      ],
    });
    const first = renderHook(() => useTaskLive("t1"));
    await waitFor(() => expect(first.result.current.error).toMatchObject({ status: 404, code: "not_found" }));
    first.unmount();
    const second = renderHook(() => useTaskLive("t1"));
    await waitFor(() => expect(second.result.current.streamError).toMatchObject({ code: "internal", message: "boom" }));
    expect(second.result.current.error).toBeNull();
    expect(second.result.current.mode).toBe("failed");
    await act(async () => undefined);
  });
});
