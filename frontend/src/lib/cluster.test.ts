import { describe, expect, it } from "vitest";
import type { AgentDevice, AgentInfo, Task } from "../api/types";
import { agentDevices, deviceAsk, deviceReading, deviceRows, heartbeatAge, hiddenQueued, queueOrder } from "./cluster";

function device(index: number, over: Partial<AgentDevice> = {}): AgentDevice {
  return {
    index,
    kind: "cpu",
    uuid: null,
    name: `CPU slot ${index}`,
    memory_total_bytes: 0,
    memory_free_bytes: 0,
    utilization_percent: 0,
    ...over,
  };
}

function agent(over: Partial<AgentInfo> = {}): AgentInfo {
  return {
    agent_id: "a1",
    address: "127.0.0.1:50061",
    hostname: "host",
    slots: 3,
    free_slots: 1,
    alive: true,
    last_heartbeat: "2026-12-01T10:00:00Z",
    devices: [device(2), device(0), device(1)],
    warm_pool_memory_bytes: 0,
    busy_devices: [],
    ...over,
  };
}

function task(id: string, over: Partial<Task> = {}): Task {
  return {
    id,
    type: "sft",
    status: "running",
    config: {},
    created_at: "2026-12-01T09:00:00Z",
    updated_at: null,
    started_at: null,
    finished_at: null,
    agent_id: "a1",
    error: null,
    error_reason: null,
    exit_code: 0,
    pid: null,
    progress: { step: 0, total_steps: 0, percent: 0, eta_seconds: null, epoch: null, loss: null, learning_rate: null },
    latest_metrics: {},
    output_dir: null,
    last_log_seq: 0,
    events: [],
    devices: [],
    ...over,
  } as Task;
}

describe("deviceRows", () => {
  it("puts each visible active task on the devices it holds, in device order", () => {
    const rows = deviceRows(agent({ busy_devices: [0, 1, 2] }), [
      task("two-devices", { devices: [0, 2] }),
      task("one", { devices: [1], status: "stopping" }),
    ]);
    expect(rows.map((r) => [r.device.index, r.tasks.map((t) => t.id), r.occupied])).toEqual([
      [0, ["two-devices"], false],
      [1, ["one"], false],
      [2, ["two-devices"], false],
    ]);
  });

  it("shows a device held by a task the caller cannot see as occupied, and a free one as free", () => {
    const rows = deviceRows(agent({ busy_devices: [1] }), [task("mine", { devices: [0] })]);
    expect(rows.map((r) => [r.device.index, r.tasks.length, r.occupied])).toEqual([
      [0, 1, false],
      [1, 0, true],
      [2, 0, false],
    ]);
  });

  it("ignores ended and queued tasks, and tasks of other agents", () => {
    const rows = deviceRows(agent({ busy_devices: [] }), [
      task("done", { status: "succeeded", devices: [0] }),
      task("waiting", { status: "queued", devices: [] }),
      task("elsewhere", { agent_id: "a2", devices: [1] }),
    ]);
    expect(rows.every((r) => r.tasks.length === 0 && !r.occupied)).toBe(true);
  });

  it("shows a gang on the devices of each of its nodes, on every agent it runs on", () => {
    // node_placements name both agents; agent_id/devices name only node 0's.
    const gang = task("gang", {
      owner: "alice",
      agent_id: "a1",
      devices: [0],
      nodes: 2,
      gpus_per_node: 1,
      node_placements: [
        { node: 0, agent_id: "a1", devices: [0], rank0: true, status: null },
        { node: 1, agent_id: "a2", devices: [2], rank0: false, status: null },
      ],
    });
    const held = (rows: ReturnType<typeof deviceRows>) =>
      rows.map((r) => [r.device.index, r.tasks.map((t) => `${t.id}:${t.owner}`), r.occupied]);
    expect(held(deviceRows(agent({ agent_id: "a1", busy_devices: [0] }), [gang]))).toEqual([
      [0, ["gang:alice"], false],
      [1, [], false],
      [2, [], false],
    ]);
    // a2's device 1 is held by a task the caller cannot see.
    expect(held(deviceRows(agent({ agent_id: "a2", busy_devices: [1, 2] }), [gang]))).toEqual([
      [0, [], false],
      [1, [], true],
      [2, ["gang:alice"], false],
    ]);
    expect(deviceRows(agent({ agent_id: "a3", busy_devices: [0] }), [gang]).map((r) => r.tasks.length)).toEqual([
      0, 0, 0,
    ]);
  });

  it("counts slots for an agent that reported no devices", () => {
    expect(agentDevices(agent({ devices: [], slots: 2 })).map((d) => [d.index, d.kind])).toEqual([
      [0, "cpu"],
      [1, "cpu"],
    ]);
  });
});

describe("queueOrder", () => {
  it("orders queued tasks by position, those without one (data check pending) last by age", () => {
    const ordered = queueOrder([
      task("running", { status: "running" }),
      task("late-check", { status: "queued", queue_position: null, created_at: "2026-12-01T09:05:00Z" }),
      task("second", { status: "queued", queue_position: 2 }),
      task("early-check", { status: "queued", queue_position: null, created_at: "2026-12-01T09:01:00Z" }),
      task("first", { status: "queued", queue_position: 1 }),
    ]);
    expect(ordered.map((t) => t.id)).toEqual(["first", "second", "early-check", "late-check"]);
  });

  it("counts the queued tasks the caller cannot see, never below zero", () => {
    expect(hiddenQueued(5, 2)).toBe(3);
    expect(hiddenQueued(1, 2)).toBe(0);
  });
});

describe("deviceAsk", () => {
  it("reads pinned devices first, then the count, defaulting to one device", () => {
    expect(deviceAsk({ gpu_vis: "0, 2", gpus: 4 })).toEqual({ pinned: [0, 2] });
    expect(deviceAsk({ gpu_vis: 1 })).toEqual({ pinned: [1] });
    expect(deviceAsk({ gpus: 2 })).toEqual({ count: 2, splittable: false });
    expect(deviceAsk({ gpu_vis: "", gpus: null })).toEqual({ count: 1, splittable: false });
    expect(deviceAsk({ gpus: "lots" })).toEqual({ count: 1, splittable: false });
  });

  it("asks a gang for nodes × devices per node (at least one), and marks a splittable count", () => {
    expect(deviceAsk({ gpus: 4 }, { nodes: 2, gpus_per_node: 2 })).toEqual({ nodes: 2, perNode: 2 });
    expect(deviceAsk({}, { nodes: 3, gpus_per_node: 0 })).toEqual({ nodes: 3, perNode: 1 });
    // The config's shape when the task's own is missing.
    expect(deviceAsk({ nodes: 2, gpus_per_node: 4 })).toEqual({ nodes: 2, perNode: 4 });
    expect(deviceAsk({ gpus: 4 }, { nodes: 1, gpus_per_node: 0 })).toEqual({ count: 4, splittable: false });
    // A split task requeued keeps the shape of its last run, yet asks for its gpus again.
    expect(deviceAsk({ gpus: 4, split_gpus: true }, { nodes: 2, gpus_per_node: 2 })).toEqual({
      count: 4,
      splittable: true,
    });
  });
});

describe("deviceReading", () => {
  it("gives a GPU's NVML readings, and nothing for a CPU slot or an unread GPU", () => {
    const gpu = device(0, { kind: "gpu", memory_total_bytes: 8000, memory_free_bytes: 6000, utilization_percent: 37 });
    expect(deviceReading(gpu)).toEqual({ utilizationPercent: 37, memoryUsedBytes: 2000, memoryTotalBytes: 8000 });
    expect(deviceReading(device(0))).toBeNull();
    expect(deviceReading(device(0, { kind: "gpu" }))).toBeNull();
  });
});

describe("heartbeatAge", () => {
  it("is the seconds since the last beat, null without one", () => {
    expect(heartbeatAge("2026-12-01T10:00:00Z", Date.parse("2026-12-01T10:00:04Z"))).toBe(4);
    expect(heartbeatAge(null, 0)).toBeNull();
    expect(heartbeatAge("garbage", 0)).toBeNull();
  });
});
