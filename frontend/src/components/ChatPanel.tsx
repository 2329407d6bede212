import { useEffect, useRef, useState } from "react";
import { askChat, CHAT_TYPES, closeChat, exportSourceId, type ChatModel, type RankedPassage } from "../api/chat";
import { api } from "../api/client";
import type { Task } from "../api/types";
import { useI18n } from "../i18n";
import { ErrorBanner, Spinner } from "./ui";

interface Answer {
  text: string;
  tokens: number;
  done: boolean;
  ranking?: RankedPassage[];
  /** From sending the question to the first token (or the ranking). */
  firstMs?: number;
}

/** Passages as typed: one a line, blank lines left out. */
export function splitPassages(text: string): string[] {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);
}

/** The type `task`'s model was trained as: an export's is its source task's (fetched; null until known or when the
 * source is gone, and the chat would then be refused). */
export function useTrainedType(task: Task): string | null {
  const sourceId = exportSourceId(task);
  const [sourceType, setSourceType] = useState<string | null>(null);
  useEffect(() => {
    if (!sourceId) return;
    const ctrl = new AbortController();
    api.task(sourceId, ctrl.signal).then(
      (source) => setSourceType(source.type),
      () => setSourceType(null),
    );
    return () => ctrl.abort();
  }, [sourceId]);
  return sourceId ? sourceType : task.type;
}

/** The chat panel where a task has a model to talk to: a succeeded task of a chat type, or its export. */
export function TaskChat({ task }: { task: Task }) {
  const trained = useTrainedType(task);
  if (task.status !== "succeeded" || !trained || !CHAT_TYPES.includes(trained)) return null;
  return <ChatPanel task={task} trainedType={trained} />;
}

/**
 * The monitor's chat panel for a succeeded task: a question (and optional passages, put into the task's RAG prompt)
 * answered by the tuned model as it streams, or side by side by the base and the tuned model. For an embedding task
 * the same panel ranks the passages for the query. The first question opens a chat session on an agent (the model
 * loads then); "close" frees its device at once, else it closes by itself when idle.
 */
export function ChatPanel({ task, trainedType = task.type }: { task: Task; trainedType?: string }) {
  const { t } = useI18n();
  const embedding = trainedType === "embedding";
  const [question, setQuestion] = useState("");
  const [passages, setPassages] = useState("");
  const [maxNewTokens, setMaxNewTokens] = useState(128);
  const [sideBySide, setSideBySide] = useState(false);
  const [answers, setAnswers] = useState<Partial<Record<ChatModel, Answer>>>({});
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [closedNote, setClosedNote] = useState(false);
  const controller = useRef<AbortController | null>(null);

  useEffect(() => () => controller.current?.abort(), []);

  const update = (model: ChatModel, change: (a: Answer) => Answer) =>
    setAnswers((prev) => ({ ...prev, [model]: change(prev[model] ?? { text: "", tokens: 0, done: false }) }));

  const send = async () => {
    controller.current?.abort();
    const ctrl = new AbortController();
    controller.current = ctrl;
    const models: ChatModel[] = sideBySide ? ["base", "tuned"] : ["tuned"];
    setAnswers(Object.fromEntries(models.map((m) => [m, { text: "", tokens: 0, done: false }])));
    setError(null);
    setClosedNote(false);
    setBusy(true);
    const input = { question, passages: splitPassages(passages), max_new_tokens: maxNewTokens };
    try {
      // One after the other: the first call opens the session (loads the model), the second reuses it.
      for (const model of models) {
        const started = performance.now();
        const stamp = (a: Answer) => (a.firstMs === undefined ? { ...a, firstMs: performance.now() - started } : a);
        const done = await askChat(
          task.id,
          { ...input, model },
          {
            signal: ctrl.signal,
            onToken: (piece) => update(model, (a) => ({ ...stamp(a), text: a.text + piece, tokens: a.tokens + 1 })),
          },
        );
        if (ctrl.signal.aborted) return;
        update(model, (a) => ({ ...stamp(a), text: done?.text ?? a.text, ranking: done?.ranking, done: true }));
      }
    } catch (err) {
      if (!ctrl.signal.aborted) setError((err as Error).message ?? String(err));
    } finally {
      if (controller.current === ctrl) setBusy(false);
    }
  };

  const close = async () => {
    controller.current?.abort();
    setBusy(false);
    try {
      await closeChat(task.id);
      setClosedNote(true);
    } catch (err) {
      setError((err as Error).message ?? String(err));
    }
  };

  const shown: ChatModel[] = (["base", "tuned"] as ChatModel[]).filter((m) => answers[m]);
  const passageList = splitPassages(passages);

  return (
    <section className="card" data-testid="chat-panel">
      <div className="card-head">
        <h2>{embedding ? t("chat.titleEmbedding") : t("chat.title")}</h2>
        <button type="button" className="btn btn-small" onClick={() => void close()} data-testid="chat-close">
          {t("chat.close")}
        </button>
      </div>
      <p className="muted small">{embedding ? t("chat.hintEmbedding") : t("chat.hint")}</p>
      <div className="chat-inputs">
        <label className="form-field">
          <span className="field-label">{embedding ? t("chat.query") : t("chat.question")}</span>
          <textarea
            rows={2}
            value={question}
            onChange={(e) => setQuestion(e.target.value)}
            data-testid="chat-question"
          />
        </label>
        <label className="form-field">
          <span className="field-label">{embedding ? t("chat.passagesToRank") : t("chat.passages")}</span>
          <textarea
            rows={3}
            value={passages}
            onChange={(e) => setPassages(e.target.value)}
            placeholder={t("chat.passagesHint")}
            data-testid="chat-passages"
          />
        </label>
      </div>
      <div className="chat-controls">
        {!embedding ? (
          <label className="check">
            {t("chat.maxNewTokens")}
            <input
              type="number"
              min={1}
              max={1024}
              value={maxNewTokens}
              onChange={(e) => setMaxNewTokens(Number(e.target.value))}
              className="chat-max-tokens"
              data-testid="chat-max-new-tokens"
            />
          </label>
        ) : null}
        <label className="check">
          <input
            type="checkbox"
            checked={sideBySide}
            onChange={(e) => setSideBySide(e.target.checked)}
            data-testid="chat-side-by-side"
          />
          {t("chat.sideBySide")}
        </label>
        <span className="spacer" />
        <button
          type="button"
          className="btn btn-primary"
          disabled={busy || !question.trim()}
          onClick={() => void send()}
          data-testid="chat-send"
        >
          {busy ? t("chat.sending") : embedding ? t("chat.rank") : t("chat.send")}
        </button>
      </div>
      <ErrorBanner message={error} onClose={() => setError(null)} />
      {closedNote ? <div className="banner banner-info">{t("chat.closed")}</div> : null}
      {shown.length ? (
        <div className={`chat-answers${shown.length > 1 ? " chat-answers-2" : ""}`}>
          {shown.map((model) => {
            const a = answers[model]!;
            return (
              <div
                key={model}
                className="chat-answer"
                data-testid={`chat-answer-${model}`}
                data-state={a.done ? "done" : "streaming"}
                data-tokens={a.tokens}
              >
                <div className="chat-answer-head">
                  <strong>{model === "tuned" ? t("chat.model.tuned") : t("chat.model.base")}</strong>
                  {a.firstMs !== undefined ? (
                    <span className="muted small" data-testid="chat-first-token">
                      {t("chat.firstToken", { s: (a.firstMs / 1000).toFixed(2) })}
                    </span>
                  ) : (
                    <span className="muted small">
                      <Spinner /> {t("chat.waiting")}
                    </span>
                  )}
                </div>
                {a.ranking ? (
                  <ol className="chat-ranking" data-testid="chat-ranking">
                    {a.ranking.map((r) => (
                      <li key={r.index}>
                        <span className="num">{r.score.toFixed(3)}</span> {passageList[r.index] ?? `#${r.index + 1}`}
                      </li>
                    ))}
                  </ol>
                ) : (
                  <div className="chat-text pre" data-testid="chat-text">
                    {a.text}
                    {!a.done ? <span className="chat-caret" /> : null}
                  </div>
                )}
                {a.done && embedding && !a.ranking?.length ? <p className="muted small">{t("chat.noPassages")}</p> : null}
              </div>
            );
          })}
        </div>
      ) : null}
    </section>
  );
}
