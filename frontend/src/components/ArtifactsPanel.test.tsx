// The monitor's artifacts panel: files grouped by kind, downloads fetched with the token, export -> the new task.
import { fireEvent, screen, waitFor } from "@testing-library/react";
import { MemoryRouter, Route, Routes, useParams } from "react-router-dom";
import { afterEach, beforeEach, describe, expect, it, onTestFinished, vi } from "vitest";
import { setToken } from "../api/client";
import type { Task } from "../api/types";
import { stubFetchRoutes } from "../test/fetchRoutes";
import { findBySelector, renderWithI18n } from "../test/render";
import { ArtifactsPanel, groupArtifacts } from "./ArtifactsPanel";

const ARTIFACTS = [
  { path: "checkpoint-2/adapter_model.safetensors", size: 2048, kind: "checkpoint" },
  { path: "adapter_model.safetensors", size: 4096, kind: "adapter" },
  { path: "adapter_config.json", size: 300, kind: "adapter" },
  { path: "train_summary.json", size: 120, kind: "summary" },
  { path: "logs/train.log", size: 50, kind: "log" },
  { path: "weird.bin", size: 1, kind: "something-new" },
];

const task = (status: string, extra: Partial<Task> = {}) =>
  ({ id: "t1", type: "sft", status, config: {}, published_model_sha256: "", ...extra }) as unknown as Task;

function NewTask() {
  const { taskId } = useParams();
  return <div data-testid="new-task">{taskId}</div>;
}

function renderPanel(t: Task) {
  return renderWithI18n(
    <MemoryRouter initialEntries={["/tasks/t1"]}>
      <Routes>
        <Route path="/tasks/t1" element={<ArtifactsPanel task={t} />} />
        <Route path="/tasks/:taskId" element={<NewTask />} />
      </Routes>
    </MemoryRouter>,
    "en",
  );
}

/** Object URLs and anchor clicks, recorded (jsdom has neither). */
function captureSaves() {
  const saved: string[] = [];
  const url = URL as unknown as Record<string, unknown>;
  const original = { createObjectURL: url.createObjectURL, revokeObjectURL: url.revokeObjectURL };
  Object.assign(url, { createObjectURL: () => "blob:x", revokeObjectURL: () => undefined });
  const click = vi.spyOn(HTMLAnchorElement.prototype, "click").mockImplementation(function (this: HTMLAnchorElement) {
    saved.push(this.download);
  });
  onTestFinished(() => {
    Object.assign(url, original);
    click.mockRestore();
  });
  return saved;
}

beforeEach(() => setToken("tok-a"));
afterEach(() => vi.unstubAllGlobals());

describe("groupArtifacts", () => {
  it("orders the groups by kind and puts unknown kinds under other", () => {
    expect(groupArtifacts(ARTIFACTS).map((g) => [g.kind, g.items.map((a) => a.path)])).toEqual([
      ["adapter", ["adapter_config.json", "adapter_model.safetensors"]],
      ["summary", ["train_summary.json"]],
      ["log", ["logs/train.log"]],
      ["checkpoint", ["checkpoint-2/adapter_model.safetensors"]],
      ["other", ["weird.bin"]],
    ]);
  });
});

describe("ArtifactsPanel", () => {
  it("lists the files by kind with their source, and downloads one with the token", async () => {
    const calls = stubFetchRoutes({
      "/api/finetune/tasks/t1/artifacts": { json: { artifacts: ARTIFACTS, source: "published" } },
      "/api/finetune/tasks/t1/artifacts/logs/train.log": {
        body: "log text",
        headers: { "content-type": "application/octet-stream", "content-disposition": 'attachment; filename="train.log"' },
      },
    });
    const saved = captureSaves();
    renderPanel(task("succeeded", { published_model_sha256: "c".repeat(64) }));
    await screen.findByText("adapter_model.safetensors");
    expect(document.querySelector("[data-source]")?.textContent).toBe("from the platform's store (published)");
    expect([...document.querySelectorAll("[data-group]")].map((g) => g.getAttribute("data-group"))).toEqual([
      "adapter",
      "summary",
      "log",
      "checkpoint",
      "other",
    ]);
    expect(document.querySelector("details[data-group=checkpoint]")).not.toBeNull();

    const row = document.querySelector("tr[data-artifact='logs/train.log']")!;
    fireEvent.click(row.querySelector("button")!);
    await waitFor(() => expect(saved).toEqual(["train.log"]));
    const get = calls.find((c) => c.url === "/api/finetune/tasks/t1/artifacts/logs/train.log")!;
    expect(get.headers.Authorization).toBe("Bearer tok-a");
  });

  it("downloads the whole model as a .tar", async () => {
    const calls = stubFetchRoutes({
      "/api/finetune/tasks/t1/artifacts": { json: { artifacts: [], source: "agent" } },
      "/api/finetune/tasks/t1/model": {
        body: "tarbytes",
        headers: { "content-type": "application/x-tar", "content-disposition": 'attachment; filename="t1-model.tar"' },
      },
    });
    const saved = captureSaves();
    renderPanel(task("succeeded"));
    await screen.findByText("No files yet.");
    fireEvent.click(screen.getByTestId("download-model"));
    await waitFor(() => expect(saved).toEqual(["t1-model.tar"]));
    expect(calls.find((c) => c.url.endsWith("/model"))!.headers.Authorization).toBe("Bearer tok-a");
  });

  it("shows the server's refusal of a download", async () => {
    stubFetchRoutes({
      "/api/finetune/tasks/t1/artifacts": { json: { artifacts: ARTIFACTS.slice(4, 5), source: "agent" } },
      "/api/finetune/tasks/t1/artifacts/logs/train.log": {
        status: 503,
        json: { error: { code: "unavailable", message: "agent a1 is offline" } },
      },
    });
    renderPanel(task("failed"));
    const row = await findBySelector("tr[data-artifact='logs/train.log']");
    fireEvent.click(row.querySelector("button")!);
    await screen.findByText("Download failed: agent a1 is offline");
  });

  it("exports with merge_lora and dtype and goes to the new task", async () => {
    const calls = stubFetchRoutes({
      "/api/finetune/tasks/t1/artifacts": { json: { artifacts: [], source: "agent" } },
      "POST /api/finetune/tasks/t1/export": { status: 201, json: { id: "t-export", type: "export", status: "queued" } },
    });
    renderPanel(task("succeeded"));
    fireEvent.click(screen.getByTestId("export-merge-lora"));
    fireEvent.change(screen.getByTestId("export-dtype"), { target: { value: "bfloat16" } });
    fireEvent.click(screen.getByTestId("export-start"));
    expect((await screen.findByTestId("new-task")).textContent).toBe("t-export");
    const post = calls.find((c) => c.method === "POST")!;
    expect(post.body).toEqual({ merge_lora: false, dtype: "bfloat16" });
  });

  it("offers no model download or export for a failed task, nor export for an export task", async () => {
    stubFetchRoutes({ "/api/finetune/tasks/t1/artifacts": { json: { artifacts: ARTIFACTS.slice(4, 5), source: "agent" } } });
    const { unmount } = renderPanel(task("failed"));
    await screen.findByText("logs/train.log");
    expect(screen.queryByTestId("download-model")).toBeNull();
    expect(screen.queryByTestId("export-form")).toBeNull();
    unmount();
    renderPanel(task("succeeded", { type: "export" }));
    await screen.findByText("logs/train.log");
    expect(screen.getByTestId("download-model")).not.toBeNull();
    expect(screen.queryByTestId("export-form")).toBeNull();
  });

  it("shows why the artifacts cannot be listed", async () => {
    stubFetchRoutes({
      "/api/finetune/tasks/t1/artifacts": {
        status: 503,
        json: { error: { code: "unavailable", message: "the task's agent is gone and nothing was published" } },
      },
    });
    renderPanel(task("stopped"));
    await screen.findByText("Cannot list the artifacts: the task's agent is gone and nothing was published");
  });
});
