// A multi-node task's nodes on the monitor (card and header) and in the task list; one-node tasks unchanged.
import { screen, waitFor, within } from "@testing-library/react";
import { MemoryRouter, Route, Routes } from "react-router-dom";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { setToken } from "../api/client";
import type { Task } from "../api/types";
import { TaskMonitorPage } from "../pages/TaskMonitorPage";
import { stubFetchRoutes } from "../test/fetchRoutes";
import { renderWithI18n } from "../test/render";
import { makeTask } from "../test/tasks";
import { NodesTag, TaskNodes } from "./TaskNodes";

// uPlot asks matchMedia for the pixel ratio when it is imported (by the monitor page); jsdom has none.
vi.hoisted(() => {
  window.matchMedia ??= ((query: string) => ({
    matches: false,
    media: query,
    onchange: null,
    addListener: () => undefined,
    removeListener: () => undefined,
    addEventListener: () => undefined,
    removeEventListener: () => undefined,
    dispatchEvent: () => false,
  })) as unknown as typeof window.matchMedia;
});

/** Two nodes of two devices; node 1 listed first (the card orders by node), node 1's run has failed. */
function gang(over: Partial<Task> = {}): Task {
  return makeTask({
    status: "running",
    agent_id: "agent-a",
    devices: [0, 1],
    nodes: 2,
    gpus_per_node: 2,
    node_placements: [
      { node: 1, agent_id: "agent-b", devices: [2, 3], rank0: false, status: "failed" },
      { node: 0, agent_id: "agent-a", devices: [0, 1], rank0: true, status: null },
    ],
    ...over,
  });
}

const oneNode = () => makeTask({ status: "running", agent_id: "agent-a", devices: [0, 1] });

function rows() {
  return within(screen.getByTestId("node-placements")).getAllByRole("row").slice(1);
}

describe("<TaskNodes>", () => {
  it("lists a gang's nodes in order with agent, devices, the rank-0 badge and each node's status", () => {
    renderWithI18n(<TaskNodes task={gang()} />, "en");
    expect(screen.getByRole("heading").textContent).toBe("Nodes: 2 × 2 GPU(s)");
    const [first, second] = rows();
    expect(first.getAttribute("data-node")).toBe("0");
    expect(within(first).getByText("agent-a")).toBeTruthy();
    expect(within(first).getByTestId("node-devices").textContent).toBe("0, 1");
    expect(within(first).getByTestId("rank0").textContent).toBe("rank 0");
    // Still running (no outcome yet): it shows the task's own status.
    expect(first.querySelector(".badge[data-status]")?.getAttribute("data-status")).toBe("running");
    expect(second.getAttribute("data-node")).toBe("1");
    expect(within(second).getByText("agent-b")).toBeTruthy();
    expect(within(second).getByTestId("node-devices").textContent).toBe("2, 3");
    expect(within(second).queryByTestId("rank0")).toBeNull();
    const failed = second.querySelector(".badge[data-status]");
    expect(failed?.getAttribute("data-status")).toBe("failed");
    expect(failed?.className).toContain("badge-failed");
    expect(failed?.textContent).toBe("Failed");
    expect(screen.getAllByTestId("rank0")).toHaveLength(1);
  });

  it("says the same in Chinese", () => {
    renderWithI18n(<TaskNodes task={gang()} />, "zh");
    expect(screen.getByRole("heading").textContent).toBe("多节点训练：2 个节点 × 每节点 2 个 GPU");
    expect(screen.getByText("节点序号")).toBeTruthy();
    const [, second] = rows();
    expect(second.querySelector(".badge[data-status]")?.textContent).toBe("失败");
  });

  it("shows every node's outcome once the gang has ended", () => {
    const ended = gang({
      status: "succeeded",
      node_placements: [
        { node: 0, agent_id: "agent-a", devices: [0], rank0: true, status: "succeeded" },
        { node: 1, agent_id: "agent-b", devices: [0], rank0: false, status: "succeeded" },
      ],
      gpus_per_node: 1,
    });
    renderWithI18n(<TaskNodes task={ended} />, "en");
    expect(rows().map((r) => r.querySelector(".badge[data-status]")?.getAttribute("data-status"))).toEqual([
      "succeeded",
      "succeeded",
    ]);
  });

  it("says a queued gang is waiting for all its nodes at once", () => {
    renderWithI18n(<TaskNodes task={gang({ status: "queued", node_placements: [], agent_id: null, devices: [] })} />, "en");
    expect(screen.queryByTestId("node-placements")).toBeNull();
    expect(screen.getByTestId("nodes-unplaced").textContent).toBe(
      "Not placed yet: all 2 nodes start together once each has 2 free device(s).",
    );
  });

  it("renders nothing for a one-node task", () => {
    const { container } = renderWithI18n(
      <>
        <TaskNodes task={oneNode()} />
        <NodesTag task={oneNode()} />
      </>,
      "en",
    );
    expect(container.innerHTML).toBe("");
  });

  it("tags a gang's row in the task list with its node count", () => {
    renderWithI18n(<NodesTag task={gang()} />, "en");
    expect(screen.getByTestId("nodes-tag").textContent).toBe("2 nodes");
  });
});

describe("the monitor page", () => {
  beforeEach(() => setToken("tok"));
  afterEach(() => vi.unstubAllGlobals());

  /** The monitor over polling: the stream routes answer JSON (not an event stream), so the page polls. */
  function renderMonitor(task: Task) {
    const base = `/api/finetune/tasks/${task.id}`;
    stubFetchRoutes({
      [base]: { json: task },
      [`${base}/events/stream`]: { json: {} },
      [`${base}/logs/stream`]: { json: {} },
      [`${base}/metrics`]: { json: { task_id: task.id, points: [] } },
      [`${base}/logs`]: { json: { task_id: task.id, lines: [], last_seq: 0 } },
    });
    return renderWithI18n(
      <MemoryRouter initialEntries={[`/tasks/${task.id}`]}>
        <Routes>
          <Route path="/tasks/:taskId" element={<TaskMonitorPage />} />
        </Routes>
      </MemoryRouter>,
      "en",
    );
  }

  it("shows a gang's nodes instead of one agent", async () => {
    renderMonitor(gang());
    await waitFor(() => expect(screen.getByTestId("task-nodes")).toBeTruthy());
    const head = document.querySelector(".page-head p")?.textContent ?? "";
    expect(head).toContain("nodes: 2 × 2 GPU(s)");
    expect(head).not.toContain("agent:");
    expect(rows().map((r) => r.getAttribute("data-agent-id"))).toEqual(["agent-a", "agent-b"]);
  });

  it("shows a one-node task's agent as before, with no nodes card", async () => {
    renderMonitor(oneNode());
    await waitFor(() => expect(document.querySelector(".monitor-page")).toBeTruthy());
    expect(document.querySelector(".page-head p")?.textContent).toContain("agent: agent-a");
    expect(screen.queryByTestId("task-nodes")).toBeNull();
  });
});
