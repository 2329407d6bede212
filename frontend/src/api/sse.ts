// The gateway's server-sent event streams, read with fetch() so that the token travels in the Authorization header
// (EventSource cannot send headers, and a token in the URL ends up in access logs). The event stream format is
// parsed by eventsource-parser. Two layers:
//   readEventStream   one connection: status check, events until the stream closes, `end`, an `error` event or abort;
//   followEventStream a live subscription: reconnects with backoff after a drop, resuming from a seq (after_seq and
//                     Last-Event-ID), and says when streaming is unavailable so the caller can poll instead.

import { createParser, type EventSourceMessage } from "eventsource-parser";
import { ApiError, apiErrorFromBody, apiUrl, getToken, notifyUnauthorized, parseJson } from "./client";

export interface StreamEvent {
  /** The event type; "message" when the server named none (as EventSource does). */
  event: string;
  data: string;
  id?: string;
}

/** How one connection ended: the server's `end` event, the connection closed without one, or our abort. */
export type ReadOutcome = "end" | "closed" | "aborted";

/** The server answered, but not with an event stream (e.g. an older gateway or a proxy page). */
export class StreamUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StreamUnavailableError";
  }
}

/** The server sent `event: error` with the error JSON before closing the stream: the stream cannot go on. */
export class StreamErrorEvent extends ApiError {
  constructor(status: number, code: string, message: string, field: string | null = null) {
    super(status, code, message, field);
    this.name = "StreamErrorEvent";
  }
}

// The gateway's error codes (gRPC status names) and the HTTP status they stand for (gateway/errors.py).
const CODE_STATUS: Record<string, number> = {
  invalid_argument: 400,
  unauthenticated: 401,
  permission_denied: 403,
  not_found: 404,
  failed_precondition: 409,
  already_exists: 409,
  resource_exhausted: 429,
  unavailable: 503,
  deadline_exceeded: 504,
};

/** The data of an `error` event, `{"error": {"code", "message", "field"}}`, as a StreamErrorEvent. */
export function streamErrorFrom(data: string): StreamErrorEvent {
  const err = (parseJson(data) as { error?: { code?: unknown; message?: unknown; field?: unknown } } | null)?.error;
  const code = typeof err?.code === "string" && err.code ? err.code : "stream_error";
  const message = typeof err?.message === "string" && err.message ? err.message : data || "stream error";
  const field = typeof err?.field === "string" ? err.field : null;
  return new StreamErrorEvent(CODE_STATUS[code] ?? 500, code, message, field);
}

/** Longest event (or partial line) the parser keeps buffered; a longer one is a broken stream. */
const MAX_BUFFER = 8 * 1024 * 1024;

export interface ReadOptions {
  query?: Record<string, string | number | undefined | null>;
  /** Sent as Last-Event-ID (when resuming after a drop). */
  lastEventId?: string | number | null;
  signal: AbortSignal;
  /** The server accepted: status 2xx and an event stream. */
  onOpen?: () => void;
  /** Every event but `end` and `error`, in order. */
  onEvent: (event: StreamEvent) => void;
  /** The server's `retry:` field (ms). */
  onRetry?: (ms: number) => void;
  /** A POST with this JSON body (e.g. a chat question) instead of a GET. */
  body?: unknown;
}

/**
 * One connection to an SSE route. Resolves with how it ended; rejects with an ApiError for a refusal (status >= 400,
 * after calling the 401 handler for a 401; status 0 for a network error or a dropped connection), with a
 * StreamErrorEvent for an `error` event (after calling the 401 handler for `unauthenticated`), or with a
 * StreamUnavailableError when the answer is not an event stream.
 */
export async function readEventStream(path: string, options: ReadOptions): Promise<ReadOutcome> {
  const { signal } = options;
  if (signal.aborted) return "aborted";
  const headers: Record<string, string> = { Accept: "text/event-stream" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (options.lastEventId !== undefined && options.lastEventId !== null && options.lastEventId !== "") {
    headers["Last-Event-ID"] = String(options.lastEventId);
  }

  let response: Response;
  try {
    const post = options.body !== undefined;
    if (post) headers["Content-Type"] = "application/json";
    response = await fetch(apiUrl(path, options.query), {
      method: post ? "POST" : "GET",
      headers,
      body: post ? JSON.stringify(options.body) : undefined,
      signal,
      cache: "no-store",
    });
  } catch (err) {
    if (signal.aborted) return "aborted";
    throw new ApiError(0, "network_error", `network error: ${(err as Error)?.message ?? err}`);
  }
  if (!response.ok) {
    let text = "";
    try {
      text = await response.text();
    } catch {
      if (signal.aborted) return "aborted";
    }
    const error = apiErrorFromBody(response.status, response.statusText, parseJson(text));
    if (response.status === 401) notifyUnauthorized();
    throw error;
  }
  const contentType = response.headers.get("content-type") ?? "";
  if (!response.body || !contentType.toLowerCase().startsWith("text/event-stream")) {
    await response.body?.cancel().catch(() => undefined);
    throw new StreamUnavailableError(`not an event stream (content-type ${contentType || "none"})`);
  }

  // Set by the parser's callbacks (an object, so that TypeScript does not narrow the fields to null).
  const state: { ended: boolean; failure: StreamErrorEvent | null; broken: Error | null } = {
    ended: false,
    failure: null,
    broken: null,
  };
  const parser = createParser({
    maxBufferSize: MAX_BUFFER,
    onEvent: (message: EventSourceMessage) => {
      if (state.ended || state.failure) return; // nothing after the end
      const type = message.event || "message";
      if (type === "end") state.ended = true;
      else if (type === "error") state.failure = streamErrorFrom(message.data);
      else options.onEvent({ event: type, data: message.data, id: message.id });
    },
    onRetry: (ms) => options.onRetry?.(ms),
    onError: (err) => {
      // Unknown fields and bad retry values are ignored (as EventSource does); an overlong event is not.
      if (err.type === "max-buffer-size-exceeded") state.broken = err;
    },
  });

  options.onOpen?.();
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  try {
    while (!state.ended && !state.failure && !state.broken) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (err) {
        if (signal.aborted) return "aborted";
        throw new ApiError(0, "network_error", `stream interrupted: ${(err as Error)?.message ?? err}`);
      }
      if (chunk.done) {
        parser.feed(decoder.decode());
        break;
      }
      parser.feed(decoder.decode(chunk.value, { stream: true }));
    }
  } finally {
    // Close the connection (a no-op when the server already closed it).
    reader.cancel().catch(() => undefined);
  }
  if (signal.aborted) return "aborted";
  if (state.failure) {
    if (state.failure.code === "unauthenticated") notifyUnauthorized();
    throw state.failure;
  }
  if (state.broken) throw new ApiError(0, "stream_error", state.broken.message);
  return state.ended ? "end" : "closed";
}

/** How a subscription ended: `end`, a drop while `shouldStop()` said so, streaming unavailable (poll), or abort. */
export type FollowOutcome = "end" | "stopped" | "unavailable" | "aborted";

export interface FollowOptions {
  /** The seq to resume after: sent as after_seq on every connection and as Last-Event-ID when resuming. */
  resumeFrom: () => number;
  signal: AbortSignal;
  onOpen?: () => void;
  onEvent: (event: StreamEvent) => void;
  /** A connection dropped (or a reconnect failed); the next attempt is in `delayMs`. */
  onReconnecting?: (delayMs: number) => void;
  /** Asked after a drop: true ends the subscription ("stopped") instead of reconnecting. */
  shouldStop?: () => boolean;
  initialDelayMs?: number;
  maxDelayMs?: number;
}

export const RECONNECT_INITIAL_MS = 1000;
export const RECONNECT_MAX_MS = 30000;

/** The wait before reconnect attempt `failures` (0-based): doubling from the base, capped. */
export function backoffDelay(failures: number, baseMs = RECONNECT_INITIAL_MS, maxMs = RECONNECT_MAX_MS): number {
  return Math.min(maxMs, baseMs * 2 ** Math.min(failures, 20));
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}

/**
 * Follow an SSE route until `end`. The first connection being refused or unreachable means streaming is unavailable
 * ("unavailable": the caller polls). Once a connection has been open, a drop or a network error / 5xx / 429 on
 * reconnecting is retried with backoff (reset by every successful open). Rejects with a StreamErrorEvent for an
 * `error` event, and with an ApiError for a 401 (any time) or, after streaming has worked, another 4xx refusal (e.g.
 * 404 once the task was deleted).
 */
export async function followEventStream(path: string, options: FollowOptions): Promise<FollowOutcome> {
  const { signal } = options;
  let everOpened = false;
  let resuming = false;
  let failures = 0;
  let base = options.initialDelayMs ?? RECONNECT_INITIAL_MS;
  const max = options.maxDelayMs ?? RECONNECT_MAX_MS;

  while (!signal.aborted) {
    const seq = options.resumeFrom();
    try {
      const outcome = await readEventStream(path, {
        query: { after_seq: seq },
        lastEventId: resuming && seq > 0 ? seq : null,
        signal,
        onOpen: () => {
          everOpened = true;
          failures = 0;
          options.onOpen?.();
        },
        onEvent: options.onEvent,
        onRetry: (ms) => {
          if (ms > 0) base = ms;
        },
      });
      if (outcome !== "closed") return outcome;
    } catch (err) {
      if (signal.aborted) return "aborted";
      if (err instanceof StreamErrorEvent) throw err;
      if (err instanceof ApiError && err.status === 401) throw err;
      if (!everOpened) return "unavailable";
      if (err instanceof ApiError && err.status >= 400 && err.status < 500 && err.status !== 408 && err.status !== 429) {
        throw err;
      }
      // A network error, a 5xx (the gateway restarting) or not an event stream: try again.
    }
    if (options.shouldStop?.()) return "stopped";
    resuming = true;
    const delay = backoffDelay(failures, base, max);
    failures += 1;
    options.onReconnecting?.(delay);
    await sleep(delay, signal);
  }
  return "aborted";
}
