// The SSE reader over fetch(): a fake fetch hands it ReadableStreams, so these are unit tests of the reader, the
// reconnect/resume logic and the error handling (no network).
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ApiError, setToken, setUnauthorizedHandler } from "./client";
import {
  backoffDelay,
  followEventStream,
  readEventStream,
  StreamErrorEvent,
  StreamUnavailableError,
  streamErrorFrom,
  type StreamEvent,
} from "./sse";

const TOKEN = "secret-token-123";
const encoder = new TextEncoder();

/** A body the test writes to; it errors with an AbortError when the request's signal aborts (as fetch does). */
function controlledBody(signal?: AbortSignal | null) {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  let cancelled = false;
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
    },
    cancel() {
      cancelled = true;
    },
  });
  signal?.addEventListener("abort", () => {
    try {
      controller.error(new DOMException("The operation was aborted.", "AbortError"));
    } catch {
      /* already closed */
    }
  });
  return {
    stream,
    push: (text: string) => controller.enqueue(encoder.encode(text)),
    close: () => controller.close(),
    fail: (err: Error) => controller.error(err),
    get cancelled() {
      return cancelled;
    },
  };
}

type Body = ReturnType<typeof controlledBody>;
interface Call {
  url: string;
  headers: Record<string, string>;
  signal: AbortSignal | null | undefined;
  body?: Body;
}
type Reply = (call: Call) => Response | Promise<Response>;

/** A fake fetch answering each call with the next reply; records the URL, headers and signal of every call. */
function fakeFetch(...replies: Reply[]) {
  const calls: Call[] = [];
  const fn = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const call: Call = {
      url: String(input),
      headers: { ...((init?.headers as Record<string, string>) ?? {}) },
      signal: init?.signal,
    };
    calls.push(call);
    if (init?.signal?.aborted) throw new DOMException("The operation was aborted.", "AbortError");
    const reply = replies.shift();
    if (!reply) throw new TypeError("Failed to fetch (no more replies)");
    return reply(call);
  });
  vi.stubGlobal("fetch", fn);
  return { fn, calls };
}

/** An event stream reply: `chunks` are written at once; with `keepOpen` the body stays open for the test. */
function sse(chunks: string[], { keepOpen = false } = {}): Reply {
  return (call) => {
    const body = controlledBody(call.signal);
    call.body = body;
    for (const chunk of chunks) body.push(chunk);
    if (!keepOpen) body.close();
    return new Response(body.stream, { status: 200, headers: { "content-type": "text/event-stream; charset=utf-8" } });
  };
}

function json(status: number, data: unknown): Reply {
  return () => new Response(JSON.stringify(data), { status, headers: { "content-type": "application/json" } });
}

const networkDown: Reply = () => {
  throw new TypeError("Failed to fetch");
};

function collector() {
  const events: StreamEvent[] = [];
  return { events, onEvent: (e: StreamEvent) => events.push(e) };
}

const PATH = "/finetune/tasks/t1/logs/stream";

beforeEach(() => {
  setToken(TOKEN);
});

afterEach(() => {
  vi.unstubAllGlobals();
  setUnauthorizedHandler(null);
});

describe("readEventStream", () => {
  it("sends the token in the Authorization header only, never in the URL", async () => {
    const { calls } = fakeFetch(sse(["event: end\ndata: {}\n\n"]));
    const { onEvent } = collector();
    await readEventStream(PATH, { query: { after_seq: 7 }, signal: new AbortController().signal, onEvent });
    expect(calls).toHaveLength(1);
    expect(calls[0].url).toBe("/api/finetune/tasks/t1/logs/stream?after_seq=7");
    expect(calls[0].url).not.toContain("access_token");
    expect(calls[0].url).not.toContain(TOKEN);
    expect(calls[0].headers.Authorization).toBe(`Bearer ${TOKEN}`);
    expect(calls[0].headers.Accept).toBe("text/event-stream");
    expect(calls[0].headers["Last-Event-ID"]).toBeUndefined();
  });

  it("parses events split across chunks, ignores comments and ends on `end`", async () => {
    const line1 = JSON.stringify({ seq: 1, line: "step 1", stream: "stdout" });
    const line2 = JSON.stringify({ seq: 2, line: "第二行", stream: "stderr" });
    const raw = `: ping\n\nid: 1\ndata: ${line1}\n\nid: 2\r\ndata: ${line2}\r\n\r\nevent: metric\ndata: {"a":\ndata: 1}\n\nevent: end\ndata: {"task_id":"t1"}\n\nid: 3\ndata: after the end\n\n`;
    // Cut into awkward pieces: mid-field, between CR and LF, mid-UTF-8 character (the body is bytes).
    const bytes = encoder.encode(raw);
    const cuts = [0, 3, 11, 40, 41, 70, 71, 72, bytes.length - 5, bytes.length];
    const { onEvent, events } = collector();
    let opened = 0;
    fakeFetch(() => {
      const stream = new ReadableStream<Uint8Array>({
        start(c) {
          for (let i = 1; i < cuts.length; i++) c.enqueue(bytes.slice(cuts[i - 1], cuts[i]));
          c.close();
        },
      });
      return new Response(stream, { status: 200, headers: { "content-type": "text/event-stream" } });
    });
    const outcome = await readEventStream(PATH, {
      signal: new AbortController().signal,
      onOpen: () => opened++,
      onEvent,
    });
    expect(outcome).toBe("end");
    expect(opened).toBe(1);
    expect(events).toEqual([
      { event: "message", data: line1, id: "1" },
      { event: "message", data: line2, id: "2" },
      { event: "metric", data: '{"a":\n1}', id: undefined },
    ]);
  });

  it("keeps multi-byte characters split between chunks intact", async () => {
    const bytes = encoder.encode('data: {"line":"训练开始"}\n\nevent: end\ndata: {}\n\n');
    const { onEvent, events } = collector();
    fakeFetch(() => {
      const stream = new ReadableStream<Uint8Array>({
        start(c) {
          // One byte at a time: every CJK character is split.
          for (const b of bytes) c.enqueue(new Uint8Array([b]));
          c.close();
        },
      });
      return new Response(stream, { status: 200, headers: { "content-type": "text/event-stream" } });
    });
    expect(await readEventStream(PATH, { signal: new AbortController().signal, onEvent })).toBe("end");
    expect(events).toEqual([{ event: "message", data: '{"line":"训练开始"}', id: undefined }]);
  });

  it("sends Last-Event-ID when resuming", async () => {
    const { calls } = fakeFetch(sse(["event: end\ndata: {}\n\n"]));
    await readEventStream(PATH, {
      query: { after_seq: 42 },
      lastEventId: 42,
      signal: new AbortController().signal,
      onEvent: () => undefined,
    });
    expect(calls[0].headers["Last-Event-ID"]).toBe("42");
    expect(calls[0].url).toContain("after_seq=42");
  });

  it("says `closed` when the connection ends without `end`", async () => {
    fakeFetch(sse(["data: 1\n\n"]));
    expect(await readEventStream(PATH, { signal: new AbortController().signal, onEvent: () => undefined })).toBe("closed");
  });

  it("closes the connection after `end` even when the server keeps it open", async () => {
    const { calls } = fakeFetch(sse(["event: end\ndata: {}\n\ndata: more\n\n"], { keepOpen: true }));
    const { onEvent, events } = collector();
    expect(await readEventStream(PATH, { signal: new AbortController().signal, onEvent })).toBe("end");
    await vi.waitFor(() => expect(calls[0].body?.cancelled).toBe(true));
    expect(events).toEqual([]);
  });

  it("an `error` event with `unauthenticated` rejects and calls the 401 handler", async () => {
    const onUnauthorized = vi.fn();
    setUnauthorizedHandler(onUnauthorized);
    const error = { error: { code: "unauthenticated", message: "token revoked", field: null } };
    const { onEvent, events } = collector();
    fakeFetch(sse([`data: {"seq":1}\n\nevent: error\ndata: ${JSON.stringify(error)}\n\ndata: ignored\n\n`]));
    const promise = readEventStream(PATH, { signal: new AbortController().signal, onEvent });
    await expect(promise).rejects.toBeInstanceOf(StreamErrorEvent);
    await promise.catch((err: StreamErrorEvent) => {
      expect(err).toBeInstanceOf(ApiError);
      expect(err.status).toBe(401);
      expect(err.code).toBe("unauthenticated");
      expect(err.message).toBe("token revoked");
    });
    expect(onUnauthorized).toHaveBeenCalledTimes(1);
    expect(events).toHaveLength(1);
  });

  it("another `error` event rejects with its code, message and field, without the 401 handler", async () => {
    const onUnauthorized = vi.fn();
    setUnauthorizedHandler(onUnauthorized);
    const error = { error: { code: "not_found", message: "task t1 not found", field: "task_id" } };
    fakeFetch(sse([`event: error\ndata: ${JSON.stringify(error)}\n\n`], { keepOpen: true }));
    const err = await readEventStream(PATH, { signal: new AbortController().signal, onEvent: () => undefined }).then(
      () => null,
      (e: unknown) => e as StreamErrorEvent,
    );
    expect(err).toBeInstanceOf(StreamErrorEvent);
    expect(err).toMatchObject({ status: 404, code: "not_found", message: "task t1 not found", field: "task_id" });
    expect(onUnauthorized).not.toHaveBeenCalled();
  });

  it("maps an `error` event without the usual JSON to a generic stream error", () => {
    expect(streamErrorFrom("boom")).toMatchObject({ status: 500, code: "stream_error", message: "boom" });
    expect(streamErrorFrom('{"error":{"code":"unavailable","message":"no control plane"}}')).toMatchObject({
      status: 503,
      code: "unavailable",
      field: null,
    });
  });

  it("a refused request rejects with the error JSON; a 401 calls the handler", async () => {
    const onUnauthorized = vi.fn();
    setUnauthorizedHandler(onUnauthorized);
    fakeFetch(
      json(404, { error: { code: "not_found", message: "no such task", field: null } }),
      json(401, { error: { code: "unauthenticated", message: "invalid token", field: null } }),
    );
    const signal = new AbortController().signal;
    await expect(readEventStream(PATH, { signal, onEvent: () => undefined })).rejects.toMatchObject({
      status: 404,
      code: "not_found",
      message: "no such task",
    });
    expect(onUnauthorized).not.toHaveBeenCalled();
    await expect(readEventStream(PATH, { signal, onEvent: () => undefined })).rejects.toMatchObject({ status: 401 });
    expect(onUnauthorized).toHaveBeenCalledTimes(1);
  });

  it("a 200 that is not an event stream is `unavailable`", async () => {
    fakeFetch(json(200, { ok: true }));
    await expect(
      readEventStream(PATH, { signal: new AbortController().signal, onEvent: () => undefined }),
    ).rejects.toBeInstanceOf(StreamUnavailableError);
  });

  it("a dropped connection rejects with a network error (status 0)", async () => {
    const { calls } = fakeFetch(sse(["data: 1\n\n"], { keepOpen: true }));
    const promise = readEventStream(PATH, { signal: new AbortController().signal, onEvent: () => undefined });
    await vi.waitFor(() => expect(calls[0]?.body).toBeDefined());
    calls[0].body!.fail(new TypeError("network error"));
    await expect(promise).rejects.toMatchObject({ status: 0, code: "network_error" });
  });

  it("abort while reading resolves `aborted` and stops delivering events", async () => {
    const abort = new AbortController();
    const { onEvent, events } = collector();
    const { calls } = fakeFetch(sse(["data: 1\n\n"], { keepOpen: true }));
    const promise = readEventStream(PATH, { signal: abort.signal, onEvent });
    await vi.waitFor(() => expect(events).toHaveLength(1));
    abort.abort();
    expect(await promise).toBe("aborted");
    expect(calls[0].signal?.aborted).toBe(true);
    expect(events).toHaveLength(1);
  });

  it("abort before the answer resolves `aborted`", async () => {
    const abort = new AbortController();
    fakeFetch(
      (call) =>
        new Promise<Response>((_, reject) =>
          call.signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError"))),
        ),
    );
    const promise = readEventStream(PATH, { signal: abort.signal, onEvent: () => undefined });
    abort.abort();
    expect(await promise).toBe("aborted");
  });
});

describe("followEventStream", () => {
  const fast = { initialDelayMs: 5, maxDelayMs: 1000 };

  it("reconnects after a drop, resuming with after_seq and Last-Event-ID", async () => {
    let seq = 0;
    const { onEvent, events } = collector();
    const delays: number[] = [];
    let opens = 0;
    const { calls } = fakeFetch(
      sse(['id: 1\ndata: {"seq":1}\n\nid: 2\ndata: {"seq":2}\n\n']),
      sse(['id: 3\ndata: {"seq":3}\n\nevent: end\ndata: {}\n\n']),
    );
    const outcome = await followEventStream(PATH, {
      ...fast,
      signal: new AbortController().signal,
      resumeFrom: () => seq,
      onOpen: () => opens++,
      onEvent: (e) => {
        seq = (JSON.parse(e.data) as { seq: number }).seq;
        onEvent(e);
      },
      onReconnecting: (ms) => delays.push(ms),
    });
    expect(outcome).toBe("end");
    expect(events.map((e) => e.id)).toEqual(["1", "2", "3"]);
    expect(opens).toBe(2);
    expect(delays).toEqual([5]);
    expect(calls).toHaveLength(2);
    expect(calls[0].url).toBe(`/api${PATH}?after_seq=0`);
    expect(calls[0].headers["Last-Event-ID"]).toBeUndefined();
    expect(calls[1].url).toBe(`/api${PATH}?after_seq=2`);
    expect(calls[1].headers["Last-Event-ID"]).toBe("2");
    expect(calls[1].headers.Authorization).toBe(`Bearer ${TOKEN}`);
    for (const call of calls) expect(call.url).not.toContain("access_token");
  });

  it("backs off (doubling) while reconnecting fails, and resets once connected", async () => {
    const delays: number[] = [];
    fakeFetch(
      sse(["data: a\n\n"]), // opens, then drops
      networkDown,
      json(502, { error: { code: "bad_gateway", message: "gateway down", field: null } }),
      sse(["data: b\n\n"]), // opens again (reset), drops
      networkDown,
      sse(["event: end\ndata: {}\n\n"]),
    );
    const outcome = await followEventStream(PATH, {
      ...fast,
      signal: new AbortController().signal,
      resumeFrom: () => 0,
      onEvent: () => undefined,
      onReconnecting: (ms) => delays.push(ms),
    });
    expect(outcome).toBe("end");
    expect(delays).toEqual([5, 10, 20, 5, 10]);
  });

  it("uses the server's retry: as the base delay", async () => {
    const delays: number[] = [];
    fakeFetch(sse(["retry: 7\ndata: a\n\n"]), sse(["event: end\ndata: {}\n\n"]));
    await followEventStream(PATH, {
      ...fast,
      signal: new AbortController().signal,
      resumeFrom: () => 0,
      onEvent: () => undefined,
      onReconnecting: (ms) => delays.push(ms),
    });
    expect(delays).toEqual([7]);
  });

  it("is `unavailable` (poll instead) when the first connection is refused or unreachable", async () => {
    for (const reply of [json(404, { detail: "Not Found" }), networkDown, json(200, [])]) {
      const { calls } = fakeFetch(reply);
      const outcome = await followEventStream(PATH, {
        ...fast,
        signal: new AbortController().signal,
        resumeFrom: () => 0,
        onEvent: () => undefined,
      });
      expect(outcome).toBe("unavailable");
      expect(calls).toHaveLength(1);
    }
  });

  it("stops on an `error` event without reconnecting", async () => {
    const onUnauthorized = vi.fn();
    setUnauthorizedHandler(onUnauthorized);
    const { calls } = fakeFetch(
      sse(['data: 1\n\nevent: error\ndata: {"error":{"code":"unauthenticated","message":"logged out","field":null}}\n\n']),
      sse(["data: 2\n\n"]),
    );
    const reconnecting = vi.fn();
    await expect(
      followEventStream(PATH, {
        ...fast,
        signal: new AbortController().signal,
        resumeFrom: () => 0,
        onEvent: () => undefined,
        onReconnecting: reconnecting,
      }),
    ).rejects.toMatchObject({ status: 401, code: "unauthenticated" });
    expect(calls).toHaveLength(1);
    expect(reconnecting).not.toHaveBeenCalled();
    expect(onUnauthorized).toHaveBeenCalledTimes(1);
  });

  it("rejects on a 401 even on the first connection (no polling with a dead token)", async () => {
    fakeFetch(json(401, { error: { code: "unauthenticated", message: "invalid token", field: null } }));
    await expect(
      followEventStream(PATH, { ...fast, signal: new AbortController().signal, resumeFrom: () => 0, onEvent: () => undefined }),
    ).rejects.toMatchObject({ status: 401 });
  });

  it("rejects on a 404 when reconnecting (the task was deleted)", async () => {
    fakeFetch(sse(["data: 1\n\n"]), json(404, { error: { code: "not_found", message: "gone", field: null } }));
    await expect(
      followEventStream(PATH, { ...fast, signal: new AbortController().signal, resumeFrom: () => 0, onEvent: () => undefined }),
    ).rejects.toMatchObject({ status: 404, code: "not_found" });
  });

  it("ends with `stopped` after a drop when shouldStop says so", async () => {
    const { calls } = fakeFetch(sse(["data: 1\n\n"]));
    const outcome = await followEventStream(PATH, {
      ...fast,
      signal: new AbortController().signal,
      resumeFrom: () => 0,
      onEvent: () => undefined,
      shouldStop: () => true,
    });
    expect(outcome).toBe("stopped");
    expect(calls).toHaveLength(1);
  });

  it("abort during the backoff wait ends at once, with no further request", async () => {
    const abort = new AbortController();
    const { calls } = fakeFetch(sse(["data: 1\n\n"]), sse(["data: 2\n\n"]));
    const promise = followEventStream(PATH, {
      initialDelayMs: 60_000,
      signal: abort.signal,
      resumeFrom: () => 0,
      onEvent: () => undefined,
      onReconnecting: () => abort.abort(),
    });
    expect(await promise).toBe("aborted");
    expect(calls).toHaveLength(1);
  });

  it("abort while connected closes the request", async () => {
    const abort = new AbortController();
    const { calls } = fakeFetch(sse(["data: 1\n\n"], { keepOpen: true }));
    const promise = followEventStream(PATH, {
      ...fast,
      signal: abort.signal,
      resumeFrom: () => 0,
      onEvent: () => abort.abort(),
    });
    expect(await promise).toBe("aborted");
    expect(calls).toHaveLength(1);
    expect(calls[0].signal?.aborted).toBe(true);
  });
});

describe("backoffDelay", () => {
  it("doubles from the base up to the cap", () => {
    expect([0, 1, 2, 3, 4, 5, 6].map((n) => backoffDelay(n, 1000, 30000))).toEqual([
      1000, 2000, 4000, 8000, 16000, 30000, 30000,
    ]);
    expect(backoffDelay(1000, 1000, 30000)).toBe(30000);
  });
});
