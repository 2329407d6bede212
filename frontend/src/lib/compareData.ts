// Loads the runs a comparison names: each task and all its metric points, refreshed while any of them still runs.

import { useEffect, useState } from "react";
import { ApiError, api } from "../api/client";
import { ACTIVE_STATUSES, type MetricPoint, type Task } from "../api/types";
import { mergePoints } from "./metrics";

const PAGE = 10000; // the metrics route's largest page
const POLL_MS = 3000;

export interface LoadedRun {
  id: string;
  task: Task;
  points: MetricPoint[];
}

export interface RunLoadError {
  id: string;
  /** 404: unknown, deleted, or another user's (the control plane answers the same for all three). */
  notFound: boolean;
  message: string;
}

/** Every point after `afterSeq`, page by page. */
async function pointsAfter(id: string, afterSeq: number, signal: AbortSignal): Promise<MetricPoint[]> {
  let all: MetricPoint[] = [];
  let after = afterSeq;
  for (;;) {
    const { points } = await api.metrics(id, { after_seq: after, limit: PAGE }, signal);
    all = all.concat(points);
    if (points.length < PAGE) return all;
    after = points[points.length - 1].seq;
  }
}

async function loadRun(id: string, known: LoadedRun | undefined, signal: AbortSignal): Promise<LoadedRun> {
  const task = await api.task(id, signal);
  const lastSeq = known?.points.length ? known.points[known.points.length - 1].seq : 0;
  const fresh = await pointsAfter(id, lastSeq, signal);
  return { id, task, points: mergePoints(known?.points ?? [], fresh) };
}

function loadError(id: string, err: unknown): RunLoadError {
  return {
    id,
    notFound: err instanceof ApiError && err.status === 404,
    message: err instanceof Error ? err.message : String(err),
  };
}

/** The runs that loaded (in the order of `ids`) and one error per id that did not; null until the first load ends. */
export function useCompareRuns(ids: string[]): { runs: LoadedRun[] | null; errors: RunLoadError[] } {
  const [runs, setRuns] = useState<LoadedRun[] | null>(null);
  const [errors, setErrors] = useState<RunLoadError[]>([]);
  const key = ids.join(",");

  useEffect(() => {
    const controller = new AbortController();
    let timer: number | undefined;
    let known = new Map<string, LoadedRun>();
    setRuns(null);
    setErrors([]);

    const tick = async () => {
      const results = await Promise.allSettled(ids.map((id) => loadRun(id, known.get(id), controller.signal)));
      if (controller.signal.aborted) return;
      const loaded: LoadedRun[] = [];
      const failed: RunLoadError[] = [];
      results.forEach((r, i) => {
        if (r.status === "fulfilled") loaded.push(r.value);
        else if (known.has(ids[i])) loaded.push(known.get(ids[i]) as LoadedRun); // a blip mid-refresh: keep what we had
        else failed.push(loadError(ids[i], r.reason));
      });
      known = new Map(loaded.map((r) => [r.id, r]));
      setRuns(loaded);
      setErrors(failed);
      // Finished runs do not change: poll only while one is still queued or running.
      if (loaded.some((r) => ACTIVE_STATUSES.includes(r.task.status))) timer = window.setTimeout(tick, POLL_MS);
    };
    void tick();
    return () => {
      controller.abort();
      window.clearTimeout(timer);
    };
    // ids is read through its key: a new array with the same ids is the same comparison.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key]);

  return { runs, errors };
}
