// The cluster page's view of /api/health and the task list: what runs on each device, the queue in order, what a
// queued task asks for. Pure functions, so the rules (who sees what, what counts as "not reported") are tested alone.

import type { AgentDevice, AgentInfo, Task } from "../api/types";

/** Statuses that hold devices (the control plane's ACTIVE set). */
export const DEVICE_HOLDING_STATUSES = ["starting", "running", "stopping"] as const;

export interface DeviceRow {
  device: AgentDevice;
  /** The caller's visible tasks on this device (all of them for an admin). */
  tasks: Task[];
  /** Held by a task the caller may not see (another user's): shown without its id or owner. */
  occupied: boolean;
}

function holdsDevices(task: Task): boolean {
  return (DEVICE_HOLDING_STATUSES as readonly string[]).includes(task.status);
}

/** The agent's devices (slot numbers for an agent that reported none, as the scheduler counts them). */
export function agentDevices(agent: AgentInfo): AgentDevice[] {
  if (agent.devices.length) return [...agent.devices].sort((a, b) => a.index - b.index);
  return Array.from({ length: agent.slots }, (_, index) => ({
    index,
    kind: "cpu",
    uuid: null,
    name: null,
    memory_total_bytes: 0,
    memory_free_bytes: 0,
    utilization_percent: 0,
  }));
}

/** Each device of the agent with the visible tasks placed on it, or "occupied" when only hidden ones hold it. */
export function deviceRows(agent: AgentInfo, tasks: Task[]): DeviceRow[] {
  const busy = new Set(agent.busy_devices ?? []);
  const active = tasks.filter((t) => holdsDevices(t) && t.agent_id === agent.agent_id);
  return agentDevices(agent).map((device) => {
    const on = active.filter((t) => (t.devices ?? []).includes(device.index));
    return { device, tasks: on, occupied: on.length === 0 && busy.has(device.index) };
  });
}

/** Queued tasks in the order they will be placed (queue position; those still waiting for their data check last). */
export function queueOrder(tasks: Task[]): Task[] {
  const queued = tasks.filter((t) => t.status === "queued");
  const key = (t: Task) => t.queue_position ?? Number.POSITIVE_INFINITY;
  return queued.sort(
    (a, b) => key(a) - key(b) || (a.created_at ?? "").localeCompare(b.created_at ?? "") || a.id.localeCompare(b.id),
  );
}

/** Queued tasks the caller cannot see (other users'): counted, never named. */
export function hiddenQueued(totalQueued: number, visibleQueued: number): number {
  return Math.max(0, totalQueued - visibleQueued);
}

export type DeviceAsk = { pinned: number[] } | { count: number };

/** What a task asks for: pinned devices (`gpu_vis`, which wins) or a device count (`gpus`, default 1). */
export function deviceAsk(config: Record<string, unknown>): DeviceAsk {
  const vis = config.gpu_vis;
  if (typeof vis === "string" || typeof vis === "number") {
    const pinned = String(vis)
      .split(",")
      .map((part) => part.trim())
      .filter(Boolean)
      .map(Number)
      .filter(Number.isInteger);
    if (pinned.length) return { pinned };
  }
  const gpus = config.gpus;
  return { count: typeof gpus === "number" && Number.isInteger(gpus) && gpus > 0 ? gpus : 1 };
}

export interface DeviceReading {
  utilizationPercent: number;
  memoryUsedBytes: number;
  memoryTotalBytes: number;
}

/** NVML's readings of a GPU; null where none is reported (a CPU slot, or a GPU NVML could not read). */
export function deviceReading(device: AgentDevice): DeviceReading | null {
  if (device.kind !== "gpu" || !(device.memory_total_bytes > 0)) return null;
  return {
    utilizationPercent: device.utilization_percent,
    memoryUsedBytes: Math.max(0, device.memory_total_bytes - device.memory_free_bytes),
    memoryTotalBytes: device.memory_total_bytes,
  };
}

/** Seconds since the agent's last heartbeat (null without one). */
export function heartbeatAge(lastHeartbeat: string | null, now: number): number | null {
  if (!lastHeartbeat) return null;
  const at = Date.parse(lastHeartbeat);
  return Number.isNaN(at) ? null : Math.max(0, (now - at) / 1000);
}
