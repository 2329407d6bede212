// Chat with a succeeded task's model: POST /finetune/tasks/<id>/chat answers server-sent events (`token` events,
// then one `done`); DELETE closes the task's chat session (frees its device on the agent).
import { request } from "./client";
import { readEventStream } from "./sse";
import type { components } from "./schema";
import type { Task } from "./types";

/** The request body (the console always sends every key); generated from the gateway's document like the events. */
export type ChatInput = Required<components["schemas"]["ChatInput"]>;
export type ChatModel = ChatInput["model"];
export type RankedPassage = components["schemas"]["RankedPassage"];
/** `event: done`: the whole answer; `ranking` only for an embedding task. */
export type ChatDone = components["schemas"]["ChatDone"];

/** The task types whose model the chat panel can talk to (embedding: ranks passages), and their exports. */
export const CHAT_TYPES = ["sft", "dpo", "kbalign", "embedding"];

/** The task an export's model comes from (its config's `source: task:<id>`); null for any other task. */
export function exportSourceId(task: Task): string | null {
  if (task.type !== "export") return null;
  const source = task.config?.source;
  return typeof source === "string" && source.startsWith("task:") ? source.slice("task:".length) : null;
}

function chatPath(taskId: string): string {
  return `/finetune/tasks/${encodeURIComponent(taskId)}/chat`;
}

/** One answer: `onToken` for each streamed piece, resolves with the `done` event (rejects with an ApiError). */
export async function askChat(
  taskId: string,
  input: ChatInput,
  { signal, onToken }: { signal: AbortSignal; onToken: (text: string) => void },
): Promise<ChatDone | null> {
  let done: ChatDone | null = null;
  await readEventStream(chatPath(taskId), {
    signal,
    body: input,
    onEvent: (event) => {
      const data = JSON.parse(event.data);
      if (event.event === "token") onToken(String(data.text ?? ""));
      else if (event.event === "done") done = data as ChatDone;
    },
  });
  return done;
}

export function closeChat(taskId: string): Promise<{ task_id: string; closed: boolean }> {
  return request(chatPath(taskId), { method: "DELETE" });
}
