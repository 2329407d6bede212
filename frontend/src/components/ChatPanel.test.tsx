// The chat panel: a question POSTed as JSON, the answer's tokens shown as the event stream delivers them, side by
// side as two calls (base, then tuned), an embedding task's ranking, and a refused question's message.
import { fireEvent, screen, waitFor } from "@testing-library/react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { setToken } from "../api/client";
import type { Task } from "../api/types";
import { stubFetchRoutes } from "../test/fetchRoutes";
import { renderWithI18n } from "../test/render";
import { ChatPanel, splitPassages, TaskChat } from "./ChatPanel";

const task = (type = "sft", config: Record<string, unknown> = {}) =>
  ({ id: "t1", type, status: "succeeded", config }) as unknown as Task;
const SSE = { "content-type": "text/event-stream" };

/** An event stream whose chunks arrive one by one, each after `release()` is called. */
function pacedStream(chunks: string[]) {
  let release: () => void = () => undefined;
  const encoder = new TextEncoder();
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const next = chunks.shift();
      if (next === undefined) return controller.close();
      await new Promise<void>((resolve) => (release = resolve));
      controller.enqueue(encoder.encode(next));
    },
  });
  return { body, release: () => release() };
}

const token = (text: string) => `event: token\ndata: ${JSON.stringify({ text })}\n\n`;
const done = (text: string, model: string) => `event: done\ndata: ${JSON.stringify({ text, model })}\n\n`;

describe("ChatPanel", () => {
  beforeEach(() => setToken("tok"));
  afterEach(() => {
    vi.unstubAllGlobals();
    setToken(null);
  });

  it("splits passages one a line, blank lines left out", () => {
    expect(splitPassages("a\n\n  b \n")).toEqual(["a", "b"]);
  });

  it("shows the tokens as they stream, then the whole answer", async () => {
    const stream = pacedStream([token("The "), token("apple "), done("The apple is red.", "tuned")]);
    const calls = stubFetchRoutes({ "POST /api/finetune/tasks/t1/chat": { body: stream.body, headers: SSE } });
    renderWithI18n(<ChatPanel task={task()} />, "en");
    fireEvent.change(screen.getByTestId("chat-question"), { target: { value: "What colour?" } });
    fireEvent.change(screen.getByTestId("chat-passages"), { target: { value: "The apple is red.\n\nSky." } });
    fireEvent.click(screen.getByTestId("chat-send"));
    const answer = await screen.findByTestId("chat-answer-tuned");
    stream.release();
    await waitFor(() => expect(answer.textContent).toContain("The"));
    expect(answer.getAttribute("data-state")).toBe("streaming");
    stream.release();
    await waitFor(() => expect(answer.getAttribute("data-tokens")).toBe("2"));
    expect(screen.getByTestId("chat-text").textContent).toBe("The apple ");
    stream.release();
    await waitFor(() => expect(answer.getAttribute("data-state")).toBe("done"));
    expect(screen.getByTestId("chat-text").textContent).toBe("The apple is red.");
    expect(calls[0].body).toEqual({ question: "What colour?", passages: ["The apple is red.", "Sky."], model: "tuned",
                                    max_new_tokens: 128 });
    expect(calls[0].headers.Authorization).toBe("Bearer tok");
  });

  it("side by side asks the base model, then the tuned one", async () => {
    const calls = stubFetchRoutes({
      "POST /api/finetune/tasks/t1/chat": (call) => {
        const model = (call.body as { model: string }).model;
        return { body: token(`${model}!`) + done(`${model}!`, model), headers: SSE };
      },
    });
    renderWithI18n(<ChatPanel task={task()} />, "en");
    fireEvent.change(screen.getByTestId("chat-question"), { target: { value: "q" } });
    fireEvent.click(screen.getByTestId("chat-side-by-side"));
    fireEvent.click(screen.getByTestId("chat-send"));
    await waitFor(() => expect(screen.getByTestId("chat-answer-tuned").getAttribute("data-state")).toBe("done"));
    expect(calls.map((c) => (c.body as { model: string }).model)).toEqual(["base", "tuned"]);
    expect(screen.getByTestId("chat-answer-base").textContent).toContain("base!");
    expect(screen.getByTestId("chat-answer-tuned").textContent).toContain("tuned!");
  });

  it("ranks an embedding task's passages and shows a refusal's message", async () => {
    let refuse = false;
    stubFetchRoutes({
      "POST /api/finetune/tasks/t1/chat": () =>
        refuse
          ? { status: 503, json: { error: { code: "unavailable", message: "no free device for a chat session" } } }
          : {
              body: `event: done\ndata: ${JSON.stringify({ text: "", model: "tuned", ranking: [
                { index: 1, score: 0.9 }, { index: 0, score: 0.2 }] })}\n\n`,
              headers: SSE,
            },
    });
    renderWithI18n(<ChatPanel task={task("embedding")} />, "en");
    fireEvent.change(screen.getByTestId("chat-question"), { target: { value: "query" } });
    fireEvent.change(screen.getByTestId("chat-passages"), { target: { value: "first\nsecond" } });
    fireEvent.click(screen.getByTestId("chat-send"));
    const ranking = await screen.findByTestId("chat-ranking");
    expect([...ranking.querySelectorAll("li")].map((li) => li.textContent)).toEqual(["0.900 second", "0.200 first"]);
    refuse = true;
    fireEvent.click(screen.getByTestId("chat-send"));
    expect((await screen.findByRole("alert")).textContent).toContain("no free device");
  });

  it("chats with an export as its source task trained (an embedding export ranks), and not without a source", async () => {
    stubFetchRoutes({ "GET /api/finetune/tasks/src": { json: { id: "src", type: "embedding", status: "succeeded" } } });
    const exported = task("export", { source: "task:src", merge_lora: true });
    const { unmount } = renderWithI18n(<TaskChat task={exported} />, "en");
    expect(await screen.findByTestId("chat-send")).toBeTruthy();
    expect(screen.getByRole("heading", { level: 2 }).textContent).toBe("Rank passages with the trained model");
    unmount();
    // The source task was deleted (404): its prompt is unknown, so there is no panel.
    stubFetchRoutes({});
    renderWithI18n(<TaskChat task={task("export", { source: "task:gone" })} />, "en");
    await waitFor(() => expect(vi.mocked(fetch)).toHaveBeenCalled());
    expect(screen.queryByTestId("chat-send")).toBeNull();
    // A type with no model to talk to, or a task that has not succeeded: no panel, nothing fetched.
    renderWithI18n(<TaskChat task={{ ...task("sft"), status: "running" } as Task} />, "en");
    expect(screen.queryByTestId("chat-send")).toBeNull();
  });
});
