// The compare view's bad input (selection counts, unknown ids) and its config diff, against stubbed REST replies.
// (The overlaid charts need a canvas: the browser test tests/test_console_compare.py covers them.)
import { fireEvent, screen } from "@testing-library/react";
import { MemoryRouter, Route, Routes } from "react-router-dom";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { setToken } from "../api/client";
import { CompareBar } from "../components/CompareBar";
import { stubFetchRoutes } from "../test/fetchRoutes";
import { findBySelector, renderWithI18n } from "../test/render";
import { ComparePage } from "./ComparePage";

// uPlot asks matchMedia for the pixel ratio when it is imported; jsdom has none.
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

function task(id: string, config: Record<string, unknown>) {
  return {
    id,
    type: "sft",
    status: "succeeded",
    config,
    created_at: "2026-01-01T00:00:00Z",
    started_at: "2026-01-01T00:00:00Z",
    finished_at: "2026-01-01T00:01:05Z",
    progress: {},
    latest_metrics: {},
    events: [],
  };
}

beforeEach(() => setToken("tok"));
afterEach(() => vi.unstubAllGlobals());

function renderAt(path: string) {
  return renderWithI18n(
    <MemoryRouter initialEntries={[path]}>
      <Routes>
        <Route path="/compare" element={<ComparePage />} />
      </Routes>
    </MemoryRouter>,
    "en",
  );
}

describe("CompareBar", () => {
  const renderBar = (selected: string[]) =>
    renderWithI18n(
      <MemoryRouter>
        <CompareBar selected={selected} onClear={() => undefined} />
      </MemoryRouter>,
      "en",
    );

  it("keeps Compare disabled with a hint below two and above five tasks", () => {
    renderBar(["a"]);
    expect(screen.getByTestId("compare-open")).toHaveProperty("disabled", true);
    expect(screen.getByTestId("compare-hint").textContent).toBe("Select 2 to 5 tasks to compare them.");
  });

  it("says why six are too many", () => {
    renderBar(["a", "b", "c", "d", "e", "f"]);
    expect(screen.getByTestId("compare-open")).toHaveProperty("disabled", true);
    expect(screen.getByTestId("compare-hint").textContent).toBe("At most 5 tasks can be compared; 6 are selected.");
  });

  it("enables Compare for two to five, without a hint", () => {
    renderBar(["a", "b"]);
    expect(screen.getByTestId("compare-open")).toHaveProperty("disabled", false);
    expect(screen.queryByTestId("compare-hint")).toBeNull();
  });
});

describe("ComparePage", () => {
  it("names an unknown or foreign task id instead of failing, and compares nothing with one run left", async () => {
    stubFetchRoutes({
      "/api/finetune/tasks/t1": { json: task("t1", { learning_rate: 0.005 }) },
      "/api/finetune/tasks/t1/metrics": { json: { task_id: "t1", points: [] } },
      "/api/finetune/tasks/ghost": { status: 404, json: { error: { code: "not_found", message: "task ghost" } } },
    });
    renderAt("/compare?ids=t1,ghost");
    const banner = await findBySelector("[data-testid=compare-error][data-task-id=ghost]");
    expect(banner.textContent).toContain("Task ghost was not found");
    expect(screen.getByText(/Fewer than two of these tasks could be loaded/)).toBeTruthy();
    expect(document.querySelector("[data-testid=compare-config]")).toBeNull();
  });

  it("explains an address with too few ids", async () => {
    stubFetchRoutes({});
    renderAt("/compare?ids=t1");
    expect(await screen.findByText(/needs 2 to 5 task IDs in the address.*it has 1/)).toBeTruthy();
  });

  it("diffs the configs key by key: differing and missing keys marked, nested keys dotted", async () => {
    stubFetchRoutes({
      "/api/finetune/tasks/t1": { json: task("t1", { learning_rate: 0.005, max_steps: 4, lora: { r: 8 } }) },
      "/api/finetune/tasks/t2": {
        json: task("t2", { learning_rate: 0.0001, max_steps: 4, lora: { r: 8 }, seed: 7 }),
      },
      "/api/finetune/tasks/t1/metrics": { json: { task_id: "t1", points: [] } },
      "/api/finetune/tasks/t2/metrics": { json: { task_id: "t2", points: [] } },
    });
    renderAt("/compare?ids=t1,t2");
    const lr = await findBySelector("[data-testid=compare-config] tr[data-key=learning_rate]");
    expect(lr.getAttribute("data-differs")).toBe("true");
    expect([...lr.querySelectorAll("td")].map((td) => td.textContent)).toEqual(["0.005", "0.0001"]);
    expect(document.querySelector("tr[data-key='lora.r']")!.getAttribute("data-differs")).toBe("false");
    const seed = document.querySelector("tr[data-key=seed]")!;
    expect([...seed.querySelectorAll("td")].map((td) => td.textContent)).toEqual(["(not set)", "7"]);
    expect(screen.getByTestId("diff-count").textContent).toBe("2 of 4 keys differ");
    expect(screen.getByText("None of these runs has emitted metrics yet.")).toBeTruthy();
    // Duration from start to finish, in the final metrics table.
    expect(screen.getAllByText("1m 05s")).toHaveLength(2);

    fireEvent.click(screen.getByLabelText("Only differing keys"));
    const keys = [...document.querySelectorAll("[data-testid=compare-config] tbody tr")].map((r) =>
      r.getAttribute("data-key"),
    );
    expect(keys).toEqual(["learning_rate", "seed"]);
  });
});
