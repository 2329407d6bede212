// The dataset upload over XMLHttpRequest: the form's field order, the token header, progress, and the answers.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { installFakeXhr } from "../test/fakeXhr";
import { ApiError, setToken, setUnauthorizedHandler } from "./client";
import { datasetForm, uploadDataset } from "./upload";

const DATASET = {
  id: "ds1",
  name: "train.jsonl",
  type: "sft",
  sha256: "ab".repeat(32),
  size: 20,
  rows: 2,
  created_at: "2025-01-01T00:00:00Z",
  owner: "admin",
};

const file = () => new File(['{"a":1}\n{"a":2}\n'], "train.jsonl", { type: "application/jsonl" });

beforeEach(() => setToken("tok-1"));
afterEach(() => {
  vi.unstubAllGlobals();
  setUnauthorizedHandler(null);
});

describe("datasetForm", () => {
  it("puts the type before the file (the server validates rows while the file streams in)", () => {
    const form = datasetForm("dpo", file());
    expect([...form.keys()]).toEqual(["type", "file"]);
    expect(form.get("type")).toBe("dpo");
    expect((form.get("file") as File).name).toBe("train.jsonl");
  });
});

describe("uploadDataset", () => {
  it("posts the form with the token and reports the bytes sent", async () => {
    const sent = installFakeXhr();
    const progress: Array<[number, number]> = [];
    const done = uploadDataset("sft", file(), { onProgress: (p) => progress.push([p.sent, p.total]) });
    const xhr = sent[0];
    expect(xhr.method).toBe("POST");
    expect(xhr.url).toBe("/api/finetune/datasets");
    expect(xhr.headers.Authorization).toBe("Bearer tok-1");
    expect([...(xhr.body as FormData).keys()]).toEqual(["type", "file"]);
    xhr.progress(100, 400);
    xhr.progress(400, 400);
    xhr.respond(201, DATASET);
    await expect(done).resolves.toEqual(DATASET);
    expect(progress).toEqual([
      [100, 400],
      [400, 400],
    ]);
  });

  it("rejects a bad file with the server's line and field", async () => {
    const sent = installFakeXhr();
    const done = uploadDataset("dpo", file());
    sent[0].respond(400, {
      error: { code: "invalid_argument", field: "file", message: "train.jsonl line 7: chosen.text: Field required" },
    });
    const err = await done.catch((e) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 400, code: "invalid_argument", field: "file" });
    expect(err.message).toContain("line 7");
  });

  it("rejects an oversized file with status 413", async () => {
    const sent = installFakeXhr();
    const done = uploadDataset("sft", file());
    sent[0].respond(413, { error: { code: "payload_too_large", message: "over 2147483648 bytes" } });
    await expect(done).rejects.toMatchObject({ status: 413, code: "payload_too_large" });
  });

  it("sends a 401 to the app's handler", async () => {
    const sent = installFakeXhr();
    const onUnauthorized = vi.fn();
    setUnauthorizedHandler(onUnauthorized);
    const done = uploadDataset("sft", file());
    sent[0].respond(401, { error: { code: "unauthenticated", message: "token expired" } });
    await expect(done).rejects.toMatchObject({ status: 401 });
    expect(onUnauthorized).toHaveBeenCalledOnce();
  });

  it("a dropped connection is a network error; abort cancels the request", async () => {
    const sent = installFakeXhr();
    const dropped = uploadDataset("sft", file());
    sent[0].fail();
    await expect(dropped).rejects.toMatchObject({ status: 0, code: "network_error" });

    const controller = new AbortController();
    const cancelled = uploadDataset("sft", file(), { signal: controller.signal });
    controller.abort();
    await expect(cancelled).rejects.toMatchObject({ name: "AbortError" });
    expect(sent[1].aborted).toBe(true);
  });
});
