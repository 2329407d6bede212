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

/** The devices the task holds on this agent: a gang's (its nodes placed there; `agent_id`/`devices` name only
 * node 0's) or a one-node task's own. */
export function devicesOn(task: Task, agentId: string): number[] {
  const placements = task.node_placements ?? [];
  if (placements.length) return placements.filter((n) => n.agent_id === agentId).flatMap((n) => n.devices);
  return task.agent_id === agentId ? (task.devices ?? []) : [];
}

/** Each device of the agent with the visible tasks placed on it, or "occupied" when only hidden ones hold it. */
export function deviceRows(agent: AgentInfo, tasks: Task[]): DeviceRow[] {
  const busy = new Set(agent.busy_devices ?? []);
  const active = tasks
    .filter(holdsDevices)
    .map((task) => ({ task, devices: devicesOn(task, agent.agent_id) }))
    .filter((held) => held.devices.length > 0);
  return agentDevices(agent).map((device) => {
    const on = active.filter((held) => held.devices.includes(device.index)).map((held) => held.task);
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

export type DeviceAsk =
  | { pinned: number[] }
  | { count: number; splittable: boolean }
  | { nodes: number; perNode: number };

function positiveInt(value: unknown): number | null {
  return typeof value === "number" && Number.isInteger(value) && value > 0 ? value : null;
}

/** What a task asks for: a count `split_gpus` lets the scheduler split over agents, several nodes (`nodes` > 1,
 * `gpus_per_node` each, at least 1), pinned devices (`gpu_vis`), or a device count (`gpus`, default 1). The task's
 * own nodes/gpus_per_node win over its config's (the control plane fills them from it). */
export function deviceAsk(
  config: Record<string, unknown>,
  shape: { nodes?: number | null; gpus_per_node?: number | null } = {},
): DeviceAsk {
  // Checked first: a split task requeued after a run keeps the shape it last got, but asks for its `gpus` again.
  const gpus = positiveInt(config.gpus) ?? 1;
  if (config.split_gpus === true) return { count: gpus, splittable: true };
  const nodes = positiveInt(shape.nodes) ?? positiveInt(config.nodes) ?? 1;
  if (nodes > 1) {
    return { nodes, perNode: positiveInt(shape.gpus_per_node) ?? positiveInt(config.gpus_per_node) ?? 1 };
  }
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
  return { count: gpus, splittable: false };
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
