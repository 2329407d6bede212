// Downloads with the bearer token: the header, the file name from Content-Disposition, progress, errors.
import { afterEach, beforeEach, describe, expect, it, onTestFinished, vi } from "vitest";
import { artifactPath, modelArchivePath, setToken } from "./client";
import { downloadWithToken, fetchBlob, filenameFromDisposition } from "./download";

beforeEach(() => setToken("tok-9"));
afterEach(() => vi.unstubAllGlobals());

function stubFetch(response: () => Response) {
  const calls: Array<{ url: string; headers: Record<string, string> }> = [];
  vi.stubGlobal(
    "fetch",
    vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
      calls.push({ url: String(input), headers: { ...((init?.headers as Record<string, string>) ?? {}) } });
      return response();
    }),
  );
  return calls;
}

describe("paths", () => {
  it("keeps the slashes of an artifact path and encodes each segment", () => {
    expect(artifactPath("t 1", "checkpoint-2/adapter model.bin")).toBe(
      "/finetune/tasks/t%201/artifacts/checkpoint-2/adapter%20model.bin",
    );
    expect(modelArchivePath("t1")).toBe("/finetune/tasks/t1/model");
  });
});

describe("filenameFromDisposition", () => {
  it("reads plain, quoted and RFC 5987 names", () => {
    expect(filenameFromDisposition('attachment; filename="t1-model.tar"')).toBe("t1-model.tar");
    expect(filenameFromDisposition("attachment; filename=adapter.bin")).toBe("adapter.bin");
    expect(filenameFromDisposition("attachment; filename=x.txt; filename*=UTF-8''%E6%A8%A1%E5%9E%8B.txt")).toBe("模型.txt");
    expect(filenameFromDisposition(null)).toBeNull();
    expect(filenameFromDisposition("attachment")).toBeNull();
  });
});

describe("fetchBlob / downloadWithToken", () => {
  it("sends the token in the header (never the URL) and counts the bytes", async () => {
    const calls = stubFetch(
      () =>
        new Response("0123456789", {
          status: 200,
          headers: { "content-disposition": 'attachment; filename="t1-model.tar"', "content-length": "10" },
        }),
    );
    const progress: number[] = [];
    const { blob, filename } = await fetchBlob(modelArchivePath("t1"), "fallback.tar", {
      onProgress: (p) => progress.push(p.received),
    });
    expect(calls[0].url).toBe("/api/finetune/tasks/t1/model");
    expect(calls[0].url).not.toContain("tok-9");
    expect(calls[0].headers.Authorization).toBe("Bearer tok-9");
    expect(filename).toBe("t1-model.tar");
    expect(blob.size).toBe(10);
    expect(progress.at(-1)).toBe(10);
  });

  it("saves through an object URL under the server's name", async () => {
    stubFetch(() => new Response("abc", { status: 200 }));
    const created: Blob[] = [];
    const createObjectURL = vi.fn((b: Blob) => {
      created.push(b);
      return "blob:fake";
    });
    // jsdom has no object URLs: give URL the two functions for this test only.
    const url = URL as unknown as Record<string, unknown>;
    const saved = { createObjectURL: url.createObjectURL, revokeObjectURL: url.revokeObjectURL };
    Object.assign(url, { createObjectURL, revokeObjectURL: vi.fn() });
    onTestFinished(() => {
      Object.assign(url, saved);
    });
    const clicked: string[] = [];
    const click = vi.spyOn(HTMLAnchorElement.prototype, "click").mockImplementation(function (this: HTMLAnchorElement) {
      clicked.push(`${this.download}|${this.getAttribute("href")}`);
    });
    onTestFinished(() => click.mockRestore());
    const name = await downloadWithToken(artifactPath("t1", "logs/train.log"), "train.log");
    expect(name).toBe("train.log");
    expect(created[0].size).toBe(3);
    expect(clicked).toEqual(["train.log|blob:fake"]);
  });

  it("turns the error JSON into an ApiError", async () => {
    stubFetch(
      () =>
        new Response(JSON.stringify({ error: { code: "invalid_argument", message: "path leaves the task directory" } }), {
          status: 400,
        }),
    );
    await expect(fetchBlob(artifactPath("t1", "../x"), "x")).rejects.toMatchObject({
      status: 400,
      message: "path leaves the task directory",
    });
  });
});
