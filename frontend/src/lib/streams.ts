// Live data of one task: its JSON and metric points (SSE events/stream, polling as a fallback) and its log lines
// (SSE logs/stream resumed by seq, polling GET /logs as a fallback). EventSource cannot send headers, so the token
// travels as ?access_token=; an EventSource re-connects by itself and sends Last-Event-ID (= the last line's seq).

import { useEffect, useRef, useState } from "react";
import { api, ApiError, streamUrl } from "../api/client";
import { FINISHED_STATUSES, type LogLine, type MetricPoint, type Task } from "../api/types";
import { mergePoints } from "./metrics";

export type StreamMode = "connecting" | "live" | "polling" | "reconnecting" | "ended";

const POLL_MS = 2000;

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
  const [mode, setMode] = useState<StreamMode>("connecting");
  const [reloadKey, setReloadKey] = useState(0);
  const lastSeq = useRef(0);

  useEffect(() => {
    const abort = new AbortController();
    const { signal } = abort;
    let source: EventSource | null = null;
    lastSeq.current = 0;
    setPoints([]);
    setTask(null);
    setError(null);

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

    const poll = async () => {
      setMode("polling");
      while (!signal.aborted) {
        try {
          await refreshTask();
          await catchUpMetrics();
          if (finished(current)) {
            setMode("ended");
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

    const subscribe = () => {
      let opened = false;
      source = new EventSource(
        streamUrl(`/finetune/tasks/${encodeURIComponent(taskId)}/events/stream`, { after_seq: lastSeq.current }),
      );
      source.onopen = () => {
        opened = true;
        setMode("live");
        // Whatever happened between the first fetch (or a drop) and this connection.
        void catchUpMetrics().catch(() => undefined);
      };
      source.addEventListener("task", (e) => {
        try {
          current = JSON.parse((e as MessageEvent).data) as Task;
          setTask(current);
          if (finished(current)) {
            // The final metrics may still be on their way; pick them up, then stop listening.
            void catchUpMetrics().catch(() => undefined);
          }
        } catch {
          /* a malformed event is skipped */
        }
      });
      source.addEventListener("metric", (e) => {
        try {
          const point = JSON.parse((e as MessageEvent).data) as MetricPoint;
          addPoints([point]);
        } catch {
          /* skipped */
        }
      });
      source.addEventListener("end", () => {
        source?.close();
        setMode("ended");
        void refreshTask().catch(() => undefined);
        void catchUpMetrics().catch(() => undefined);
      });
      source.onerror = () => {
        if (!source) return;
        if (source.readyState === EventSource.CLOSED) {
          source.close();
          source = null;
          if (finished(current)) {
            setMode("ended");
            return;
          }
          // Refused (no such route yet, or not an event stream): fall back to polling.
          if (!opened) void poll();
          else {
            setMode("reconnecting");
            window.setTimeout(() => !signal.aborted && subscribe(), POLL_MS);
          }
        } else {
          setMode("reconnecting");
        }
      };
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
      if (typeof EventSource === "undefined") void poll();
      else subscribe();
    })();

    return () => {
      abort.abort();
      source?.close();
    };
  }, [taskId, reloadKey]);

  return { task, setTask, points, error, mode, reload: () => setReloadKey((k) => k + 1) };
}

const FLUSH_MS = 150;

/** Log lines of a task, appended in batches (a render per ~150 ms, not per line). */
export function useLogLines(taskId: string, taskFinished: boolean) {
  const [lines, setLines] = useState<LogLine[]>([]);
  const [mode, setMode] = useState<StreamMode>("connecting");
  const finishedRef = useRef(taskFinished);
  finishedRef.current = taskFinished;

  useEffect(() => {
    const abort = new AbortController();
    const { signal } = abort;
    let source: EventSource | null = null;
    let lastSeq = 0;
    let pending: LogLine[] = [];
    let flushTimer: number | undefined;
    setLines([]);

    const flush = () => {
      flushTimer = undefined;
      if (!pending.length) return;
      const batch = pending;
      pending = [];
      setLines((prev) => prev.concat(batch));
    };
    const add = (line: LogLine) => {
      if (line.seq <= lastSeq) return; // a replay after a reconnect
      lastSeq = line.seq;
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
              return;
            }
            continue;
          }
        } catch {
          if (signal.aborted) return;
        }
        await sleep(POLL_MS, signal);
      }
    };

    const subscribe = () => {
      let opened = false;
      source = new EventSource(
        streamUrl(`/finetune/tasks/${encodeURIComponent(taskId)}/logs/stream`, { after_seq: lastSeq }),
      );
      source.onopen = () => {
        opened = true;
        setMode("live");
      };
      source.onmessage = (e) => {
        try {
          add(JSON.parse(e.data) as LogLine);
        } catch {
          /* skipped */
        }
      };
      source.addEventListener("end", () => {
        source?.close();
        source = null;
        flush();
        setMode("ended");
      });
      source.onerror = () => {
        if (!source) return;
        if (source.readyState === EventSource.CLOSED) {
          source.close();
          source = null;
          if (!opened) void poll();
          else {
            setMode("reconnecting");
            window.setTimeout(() => !signal.aborted && subscribe(), POLL_MS);
          }
        } else {
          setMode("reconnecting");
        }
      };
    };

    if (typeof EventSource === "undefined") void poll();
    else subscribe();

    return () => {
      abort.abort();
      source?.close();
      window.clearTimeout(flushTimer);
    };
  }, [taskId]);

  return { lines, mode };
}
