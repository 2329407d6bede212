// Live data of one task: its JSON and metric points (SSE events/stream, polling as a fallback) and its log lines
// (SSE logs/stream resumed by seq, polling GET /logs as a fallback). The streams are read with fetch() and the
// Authorization header (../api/sse.ts), never with a token in the URL; after a drop they reconnect with backoff,
// resuming after the last seq seen (after_seq and Last-Event-ID). An `error` event from the server ends a stream:
// `unauthenticated` goes to the login page (as any 401 does), anything else is shown.

import { useCallback, useEffect, useRef, useState } from "react";
import { api, ApiError } from "../api/client";
import { followEventStream, type StreamEvent } from "../api/sse";
import { FINISHED_STATUSES, type LogLine, type MetricPoint, type Task } from "../api/types";
import { mergePoints } from "./metrics";

export type StreamMode = "connecting" | "live" | "polling" | "reconnecting" | "ended" | "failed";

const POLL_MS = 2000;
// A finished task is still watched, slowly: a resume (from this page, another tab or the API) makes it active again,
// and the page follows the new attempt without a reload.
const WATCH_MS = 3000;

function finished(task: Task | null): boolean {
  return !!task && FINISHED_STATUSES.includes(task.status);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = window.setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      window.clearTimeout(timer);
      resolve();
    });
  });
}

export function useTaskLive(taskId: string) {
  const [task, setTask] = useState<Task | null>(null);
  const [points, setPoints] = useState<MetricPoint[]>([]);
  const [error, setError] = useState<ApiError | null>(null);
  const [streamError, setStreamError] = useState<ApiError | null>(null);
  const [mode, setMode] = useState<StreamMode>("connecting");
  const [reloadKey, setReloadKey] = useState(0);
  // Bumped when a finished task became active again: the streams start over after what the page already has.
  const [follow, setFollow] = useState(0);
  const lastSeq = useRef(0);
  const loaded = useRef("");
  const ended = useRef(false);

  useEffect(() => {
    const abort = new AbortController();
    const { signal } = abort;
    const key = `${taskId}#${reloadKey}`;
    if (loaded.current !== key) {
      // Another task (or a reload): from scratch. A follow-up keeps the points and the task shown.
      loaded.current = key;
      lastSeq.current = 0;
      setPoints([]);
      setTask(null);
    }
    ended.current = false;
    setError(null);
    setStreamError(null);
    setMode("connecting");

    const addPoints = (incoming: MetricPoint[]) => {
      if (!incoming.length) return;
      lastSeq.current = Math.max(lastSeq.current, ...incoming.map((p) => p.seq));
      setPoints((prev) => mergePoints(prev, incoming));
    };
    const catchUpMetrics = async () => {
      for (;;) {
        const reply = await api.metrics(taskId, { after_seq: lastSeq.current, limit: 10000 }, signal);
        addPoints(reply.points);
        if (reply.points.length < 10000) return;
      }
    };
    let current: Task | null = null;
    const refreshTask = async () => {
      current = await api.task(taskId, signal);
      setTask(current);
    };

    // After the end: until the task is active again (then the streams start over), or deleted.
    const watch = async () => {
      ended.current = true;
      while (!signal.aborted) {
        await sleep(WATCH_MS, signal);
        if (signal.aborted || document.visibilityState === "hidden") continue;
        try {
          await refreshTask();
        } catch (err) {
          if (signal.aborted) return;
          if (err instanceof ApiError && err.status === 404) {
            setError(err);
            return;
          }
          continue;
        }
        if (!finished(current)) {
          setFollow((n) => n + 1);
          return;
        }
      }
    };

    const poll = async () => {
      setMode("polling");
      while (!signal.aborted) {
        try {
          await refreshTask();
          await catchUpMetrics();
          if (finished(current)) {
            setMode("ended");
            void watch();
            return;
          }
        } catch (err) {
          if (signal.aborted) return;
          if (err instanceof ApiError && err.status === 404) {
            setError(err);
            return;
          }
        }
        await sleep(POLL_MS, signal);
      }
    };

    const onEvent = (e: StreamEvent) => {
      try {
        if (e.event === "task") {
          current = JSON.parse(e.data) as Task;
          setTask(current);
          // The final metrics may still be on their way: pick them up.
          if (finished(current)) void catchUpMetrics().catch(() => undefined);
        } else if (e.event === "metric") {
          addPoints([JSON.parse(e.data) as MetricPoint]);
        }
      } catch {
        /* a malformed event is skipped */
      }
    };

    const subscribe = async () => {
      try {
        const outcome = await followEventStream(`/finetune/tasks/${encodeURIComponent(taskId)}/events/stream`, {
          signal,
          resumeFrom: () => lastSeq.current,
          onOpen: () => {
            setMode("live");
            // Whatever happened between the first fetch (or a drop) and this connection.
            void catchUpMetrics().catch(() => undefined);
          },
          onEvent,
          onReconnecting: () => setMode("reconnecting"),
          // A drop after the task finished: nothing more will come.
          shouldStop: () => finished(current),
        });
        if (signal.aborted || outcome === "aborted") return;
        if (outcome === "unavailable") {
          // Refused (no such route, not an event stream, unreachable): fall back to polling.
          void poll();
          return;
        }
        setMode("ended");
        void refreshTask().catch(() => undefined);
        void catchUpMetrics().catch(() => undefined);
        void watch();
      } catch (err) {
        if (signal.aborted) return;
        const apiError = err instanceof ApiError ? err : new ApiError(0, "stream_error", String(err));
        setMode("failed");
        if (apiError.status === 401) return; // the 401 handler has gone to the login page
        if (apiError.status === 404) setError(apiError); // deleted meanwhile: the page says so
        else setStreamError(apiError);
      }
    };

    (async () => {
      try {
        await refreshTask();
        await catchUpMetrics();
      } catch (err) {
        if (signal.aborted) return;
        if (err instanceof ApiError) setError(err);
        return;
      }
      if (signal.aborted) return;
      if (typeof ReadableStream === "undefined") void poll();
      else void subscribe();
    })();

    return () => abort.abort();
  }, [taskId, reloadKey, follow]);

  /** The task as an action left it (stop, resume, priority): shown now, and followed live if it is active again. */
  const followTask = useCallback((next: Task) => {
    setTask(next);
    if (!finished(next) && ended.current) {
      ended.current = false;
      setFollow((n) => n + 1);
    }
  }, []);

  return { task, setTask, followTask, points, error, streamError, mode, reload: () => setReloadKey((k) => k + 1) };
}

const FLUSH_MS = 150;

/** Log lines of a task, appended in batches (a render per ~150 ms, not per line). */
export function useLogLines(taskId: string, taskFinished: boolean) {
  const [lines, setLines] = useState<LogLine[]>([]);
  const [mode, setMode] = useState<StreamMode>("connecting");
  const [error, setError] = useState<ApiError | null>(null);
  const finishedRef = useRef(taskFinished);
  finishedRef.current = taskFinished;
  // A task whose log stream ended and that is active again (resumed): the stream starts over after the last line.
  const [follow, setFollow] = useState(0);
  const ended = useRef(false);
  const loaded = useRef("");
  const lastSeqRef = useRef(0);
  useEffect(() => {
    if (!taskFinished && ended.current) {
      ended.current = false;
      setFollow((n) => n + 1);
    }
  }, [taskFinished]);

  useEffect(() => {
    const abort = new AbortController();
    const { signal } = abort;
    if (loaded.current !== taskId) {
      loaded.current = taskId;
      lastSeqRef.current = 0;
      setLines([]);
    }
    let lastSeq = lastSeqRef.current;
    let pending: LogLine[] = [];
    let flushTimer: number | undefined;
    ended.current = false;
    setError(null);
    setMode("connecting");

    const flush = () => {
      flushTimer = undefined;
      if (!pending.length) return;
      const batch = pending;
      pending = [];
      setLines((prev) => prev.concat(batch));
    };
    const add = (line: LogLine) => {
      if (line.seq <= lastSeq) return; // a replay after a reconnect
      lastSeq = lastSeqRef.current = line.seq;
      pending.push(line);
      if (flushTimer === undefined) flushTimer = window.setTimeout(flush, FLUSH_MS);
    };

    const poll = async () => {
      setMode("polling");
      while (!signal.aborted) {
        try {
          const reply = await api.logs(taskId, { after_seq: lastSeq, limit: 5000 }, signal);
          reply.lines.forEach(add);
          if (reply.lines.length === 5000) continue;
          if (finishedRef.current) {
            // One more page after the end: the last lines land before the final status.
            const tail = await api.logs(taskId, { after_seq: lastSeq, limit: 5000 }, signal);
            tail.lines.forEach(add);
            if (!tail.lines.length) {
              setMode("ended");
              ended.current = true;
              return;
            }
            continue;
          }
        } catch (err) {
          if (signal.aborted) return;
          if (err instanceof ApiError && (err.status === 401 || err.status === 404)) {
            // Logged out (the 401 handler goes to the login page) or the task is gone: polling cannot go on.
            flush();
            setError(err);
            setMode("failed");
            return;
          }
        }
        await sleep(POLL_MS, signal);
      }
    };

    const subscribe = async () => {
      try {
        const outcome = await followEventStream(`/finetune/tasks/${encodeURIComponent(taskId)}/logs/stream`, {
          signal,
          resumeFrom: () => lastSeq,
          onOpen: () => setMode("live"),
          onEvent: (e) => {
            if (e.event !== "message") return;
            try {
              add(JSON.parse(e.data) as LogLine);
            } catch {
              /* skipped */
            }
          },
          onReconnecting: () => setMode("reconnecting"),
        });
        if (signal.aborted || outcome === "aborted") return;
        if (outcome === "unavailable") {
          void poll();
          return;
        }
        flush();
        setMode("ended");
        ended.current = true;
        // The stream ends once the task has; if the page does not know it as finished (yet, or any more: resumed
        // meanwhile), look again shortly rather than miss the next attempt's lines.
        await sleep(POLL_MS, signal);
        if (!signal.aborted && ended.current && !finishedRef.current) {
          ended.current = false;
          setFollow((n) => n + 1);
        }
      } catch (err) {
        if (signal.aborted) return;
        flush();
        setError(err instanceof ApiError ? err : new ApiError(0, "stream_error", String(err)));
        setMode("failed");
      }
    };

    if (typeof ReadableStream === "undefined") void poll();
    else void subscribe();

    return () => {
      abort.abort();
      window.clearTimeout(flushTimer);
      flush();
    };
  }, [taskId, follow]);

  return { lines, mode, error };
}
