// The datasets page: the list (rows, size, short sha256), the detail's stats and preview, delete and its 409.
import { fireEvent, screen, waitFor } from "@testing-library/react";
import { MemoryRouter, Route, Routes } from "react-router-dom";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { setToken } from "../api/client";
import { stubFetchRoutes } from "../test/fetchRoutes";
import { findBySelector, renderWithI18n } from "../test/render";
import { DatasetDetailPage } from "./DatasetDetailPage";
import { DatasetsPage } from "./DatasetsPage";

const DS = {
  id: "ds1",
  name: "chat.jsonl",
  type: "sft",
  sha256: "0123456789abcdef".repeat(4),
  size: 1536,
  rows: 64,
  created_at: "2025-03-01T10:00:00Z",
  owner: "alice",
};

beforeEach(() => setToken("tok"));
afterEach(() => vi.unstubAllGlobals());

function renderAt(path: string) {
  return renderWithI18n(
    <MemoryRouter initialEntries={[path]}>
      <Routes>
        <Route path="/datasets" element={<DatasetsPage />} />
        <Route path="/datasets/:datasetId" element={<DatasetDetailPage />} />
      </Routes>
    </MemoryRouter>,
    "en",
  );
}

describe("DatasetsPage", () => {
  it("lists the datasets with rows, size and a short sha256", async () => {
    stubFetchRoutes({ "/api/finetune/datasets": { json: { datasets: [DS] } } });
    renderAt("/datasets");
    const row = await findBySelector("tr[data-dataset-id=ds1]");
    const cells = [...row.querySelectorAll("td")].map((td) => td.textContent);
    expect(cells.slice(0, 5)).toEqual(["chat.jsonl", "sft", "64", "1.5 KB", "0123456789ab"]);
    expect(cells[6]).toBe("alice");
  });

  it("filters by type through the query", async () => {
    const calls = stubFetchRoutes({ "/api/finetune/datasets": { json: { datasets: [] } } });
    renderAt("/datasets");
    await screen.findByText(/No datasets yet/);
    fireEvent.change(screen.getByTestId("dataset-filter-type"), { target: { value: "dpo" } });
    await waitFor(() => expect(calls.at(-1)!.url).toBe("/api/finetune/datasets?type=dpo"));
  });

  it("deletes after a confirmation, and explains a 409 (in use by a task)", async () => {
    let inUse = true;
    const calls = stubFetchRoutes({
      "GET /api/finetune/datasets": { json: { datasets: [DS] } },
      "DELETE /api/finetune/datasets/ds1": () =>
        inUse
          ? { status: 409, json: { error: { code: "failed_precondition", message: "in use by task t7 (running)" } } }
          : { json: { deleted: "ds1" } },
    });
    renderAt("/datasets");
    await findBySelector("tr[data-dataset-id=ds1]");
    fireEvent.click(screen.getByRole("button", { name: "Delete" }));
    expect(screen.getByRole("dialog").textContent).toContain("chat.jsonl");
    fireEvent.click(screen.getByTestId("confirm-ok"));
    await screen.findByText(
      "A queued or running task uses this dataset; it cannot be deleted yet: in use by task t7 (running)",
    );
    inUse = false;
    fireEvent.click(screen.getByRole("button", { name: "Delete" }));
    fireEvent.click(screen.getByTestId("confirm-ok"));
    await screen.findByText("Deleted dataset “chat.jsonl”");
    expect(calls.filter((c) => c.method === "DELETE")).toHaveLength(2);
  });
});

describe("DatasetDetailPage", () => {
  it("shows the reference, the stats and the first rows", async () => {
    stubFetchRoutes({
      "/api/finetune/datasets/ds1": {
        json: { ...DS, stats: { rows: 64, avg_chars: 120.5 }, preview: [{ instruction: "hi", output: "hello" }] },
      },
    });
    renderAt("/datasets/ds1");
    expect((await screen.findByTestId("dataset-ref")).textContent).toBe("dataset:ds1");
    expect(screen.getByTestId("dataset-stats").textContent).toContain("avg_chars120.5");
    const preview = screen.getByTestId("dataset-preview");
    expect(preview.textContent).toContain("First 1 rows");
    expect(preview.querySelector("pre")!.textContent).toBe(JSON.stringify({ instruction: "hi", output: "hello" }, null, 2));
  });

  it("says when the dataset does not exist", async () => {
    stubFetchRoutes({});
    renderAt("/datasets/nope");
    await screen.findByText("Dataset nope does not exist (or is not yours).");
  });
});
