// fetch wrapper for the gateway's /api: bearer token on every call, error JSON -> ApiError, 401 -> login page.
// The token only ever travels in the Authorization header, never in a URL (the live streams too: see sse.ts).

import type {
  ArtifactList,
  Dataset,
  DatasetDetail,
  ExportDtype,
  LoginReply,
  ModelEntry,
  LogLine,
  MetricPoint,
  SavedTemplate,
  SystemHealth,
  Task,
  TaskList,
  TemplateEntry,
  User,
  ValidationReport,
} from "./types";

const TOKEN_KEY = "bugagaric.token";

export class ApiError extends Error {
  status: number;
  code: string;
  field: string | null;

  constructor(status: number, code: string, message: string, field: string | null = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

export function getToken(): string | null {
  try {
    return localStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function setToken(token: string | null): void {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

type UnauthorizedHandler = () => void;
let onUnauthorized: UnauthorizedHandler | null = null;

/** The app registers what a 401 does (clear the session, go to the login page). */
export function setUnauthorizedHandler(handler: UnauthorizedHandler | null): void {
  onUnauthorized = handler;
}

interface RequestOptions {
  method?: string;
  body?: unknown;
  query?: Record<string, string | number | undefined | null>;
  /** The login call's own 401 is "wrong password", not "session expired". */
  skipUnauthorizedHandler?: boolean;
  signal?: AbortSignal;
}

/** What the app does on a 401 (also used by the stream reader for a 401 or an `unauthenticated` error event). */
export function notifyUnauthorized(): void {
  onUnauthorized?.();
}

/** Parse a response body's text as JSON; null when empty or not JSON. */
export function parseJson(text: string): unknown {
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** The gateway's error JSON `{"error": {"code", "message", "field"}}` (or FastAPI's `{"detail"}`) as an ApiError. */
export function apiErrorFromBody(status: number, statusText: string, data: unknown): ApiError {
  const err = (data as { error?: { code?: string; message?: string; field?: string | null } } | null)?.error;
  // FastAPI's own errors ({"detail": ...}) are mapped too, so the UI always has a message.
  const detail = (data as { detail?: unknown } | null)?.detail;
  const message = err?.message || (typeof detail === "string" ? detail : detail ? JSON.stringify(detail) : "");
  return new ApiError(
    status,
    err?.code ?? `http_${status}`,
    message || `${status} ${statusText}`.trim(),
    err?.field ?? null,
  );
}

export function apiUrl(path: string, query?: RequestOptions["query"]): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
  }
  const qs = params.toString();
  return `/api${path}${qs ? `?${qs}` : ""}`;
}

/** The Authorization header for a call made outside `request` (uploads, downloads). */
export function authHeaders(): Record<string, string> {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** `/finetune/tasks/<id>/artifacts/<path>`: each segment encoded, the slashes kept (the route takes a path). */
export function artifactPath(taskId: string, path: string): string {
  const segments = path.split("/").filter(Boolean).map(encodeURIComponent);
  return `/finetune/tasks/${encodeURIComponent(taskId)}/artifacts/${segments.join("/")}`;
}

export function modelArchivePath(taskId: string): string {
  return `/finetune/tasks/${encodeURIComponent(taskId)}/model`;
}

export async function request<T>(path: string, options: RequestOptions = {}): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json", ...authHeaders() };
  let body: string | undefined;
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.body);
  }
  let response: Response;
  try {
    response = await fetch(apiUrl(path, options.query), {
      method: options.method ?? "GET",
      headers,
      body,
      signal: options.signal,
    });
  } catch (err) {
    if ((err as Error)?.name === "AbortError") throw err;
    throw new ApiError(0, "network_error", `network error: ${(err as Error)?.message ?? err}`);
  }
  const data = parseJson(await response.text());
  if (!response.ok) {
    const apiError = apiErrorFromBody(response.status, response.statusText, data);
    if (response.status === 401 && !options.skipUnauthorizedHandler) notifyUnauthorized();
    throw apiError;
  }
  return data as T;
}

export const api = {
  login: (username: string, password: string) =>
    request<LoginReply>("/auth/login", {
      method: "POST",
      body: { username, password },
      skipUnauthorizedHandler: true,
    }),
  logout: () => request<unknown>("/auth/logout", { method: "POST", skipUnauthorizedHandler: true }),
  me: () => request<User>("/auth/me"),
  health: (signal?: AbortSignal) => request<SystemHealth>("/health", { signal }),
  templates: () => request<{ templates: TemplateEntry[] }>("/finetune/templates"),
  saveTemplate: (name: string, type: string, config: Record<string, unknown>) =>
    request<SavedTemplate>("/finetune/templates", { method: "POST", body: { name, type, config } }),
  deleteTemplate: (id: string) =>
    request<unknown>(`/finetune/templates/${encodeURIComponent(id)}`, { method: "DELETE" }),
  validate: (type: string, config: Record<string, unknown>) =>
    request<ValidationReport>("/finetune/validate", { method: "POST", body: { type, config } }),
  start: (type: string, config: Record<string, unknown>) =>
    request<Task>("/finetune/start", { method: "POST", body: { type, config } }),
  tasks: (query: { status?: string; type?: string; limit?: number; offset?: number }, signal?: AbortSignal) =>
    request<TaskList>("/finetune/tasks", { query, signal }),
  task: (id: string, signal?: AbortSignal) =>
    request<Task>(`/finetune/tasks/${encodeURIComponent(id)}`, { signal }),
  logs: (id: string, query: { after_seq?: number; before_seq?: number; limit?: number }, signal?: AbortSignal) =>
    request<{ task_id: string; lines: LogLine[]; last_seq: number }>(
      `/finetune/tasks/${encodeURIComponent(id)}/logs`,
      { query, signal },
    ),
  metrics: (id: string, query: { after_seq?: number; limit?: number }, signal?: AbortSignal) =>
    request<{ task_id: string; points: MetricPoint[] }>(`/finetune/tasks/${encodeURIComponent(id)}/metrics`, {
      query,
      signal,
    }),
  stop: (id: string) => request<Task>(`/finetune/tasks/${encodeURIComponent(id)}`, { method: "DELETE" }),
  /** A new attempt from `checkpoint` (one of the task's), or from its latest without one. */
  resume: (id: string, checkpoint?: string) =>
    request<Task>(`/finetune/tasks/${encodeURIComponent(id)}/resume`, {
      method: "POST",
      body: checkpoint ? { checkpoint } : {},
    }),
  setPriority: (id: string, priority: number) =>
    request<Task>(`/finetune/tasks/${encodeURIComponent(id)}`, { method: "PATCH", body: { priority } }),
  remove: (id: string) =>
    request<{ deleted: string }>(`/finetune/tasks/${encodeURIComponent(id)}/delete`, { method: "DELETE" }),
  // Uploads go through uploadDataset (upload.ts): they need upload progress, which fetch cannot report.
  datasets: (type?: string, signal?: AbortSignal) =>
    request<{ datasets: Dataset[] }>("/finetune/datasets", { query: { type }, signal }),
  dataset: (id: string, signal?: AbortSignal) =>
    request<DatasetDetail>(`/finetune/datasets/${encodeURIComponent(id)}`, { signal }),
  deleteDataset: (id: string) =>
    request<{ deleted: string }>(`/finetune/datasets/${encodeURIComponent(id)}`, { method: "DELETE" }),
  models: (signal?: AbortSignal) => request<{ models: ModelEntry[] }>("/finetune/models", { signal }),
  artifacts: (taskId: string, signal?: AbortSignal) =>
    request<ArtifactList>(`/finetune/tasks/${encodeURIComponent(taskId)}/artifacts`, { signal }),
  exportTask: (taskId: string, options: { merge_lora: boolean; dtype: ExportDtype }) =>
    request<Task>(`/finetune/tasks/${encodeURIComponent(taskId)}/export`, { method: "POST", body: options }),
};
