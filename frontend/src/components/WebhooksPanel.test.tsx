// The settings page's webhooks: the form's checks before any call, the secret shown once, the server's refusal at
// the field it names, the list with delete, and an endpoint's delivery log with every try.
import { fireEvent, screen, waitFor } from "@testing-library/react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { setToken } from "../api/client";
import { stubFetchRoutes } from "../test/fetchRoutes";
import { findBySelector, renderWithI18n } from "../test/render";
import { WebhooksPanel, webhookFormProblem } from "./WebhooksPanel";

const HOOK = {
  id: "wh_1",
  url: "https://ci.example.com/hooks",
  events: ["task.succeeded", "task.failed"],
  description: "CI",
  created_at: "2026-03-01T10:00:00Z",
};
const PAYLOAD = { type: "task.succeeded", timestamp: "2026-03-01T10:05:00Z", data: { task: { id: "t1" } } };
const DELIVERY = {
  id: "msg_abc",
  event_type: "task.succeeded",
  task_id: "t1",
  state: "delivered",
  attempts: 3,
  created_at: "2026-03-01T10:05:00Z",
  next_attempt_at: null,
  finished_at: "2026-03-01T10:06:00Z",
  payload: PAYLOAD,
  attempt_log: [
    { number: 1, time: "2026-03-01T10:05:00Z", status_code: 500, error: "HTTP 500 Internal Server Error", duration_ms: 12, next_attempt_at: "2026-03-01T10:05:30Z" },
    { number: 2, time: "2026-03-01T10:05:30Z", status_code: null, error: "timed out after 10s", duration_ms: 10000, next_attempt_at: "2026-03-01T10:06:30Z" },
    { number: 3, time: "2026-03-01T10:06:30Z", status_code: 204, error: null, duration_ms: 8, next_attempt_at: null },
  ],
};

beforeEach(() => setToken("tok"));
afterEach(() => vi.unstubAllGlobals());

describe("webhookFormProblem", () => {
  it("wants an http(s) URL and at least one event", () => {
    expect(webhookFormProblem("ftp://x", ["task.failed"])?.field).toBe("url");
    expect(webhookFormProblem("  ", ["task.failed"])?.field).toBe("url");
    expect(webhookFormProblem("https://x.example/h", [])?.field).toBe("events");
    expect(webhookFormProblem("http://x.example/h", ["task.failed"])).toBeNull();
  });
});

describe("WebhooksPanel", () => {
  it("checks the form before calling, then shows the secret once", async () => {
    const calls = stubFetchRoutes({
      "GET /api/webhooks": { json: { webhooks: [] } },
      "POST /api/webhooks": { status: 201, json: { ...HOOK, secret: "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0" } },
    });
    renderWithI18n(<WebhooksPanel />, "en");
    await screen.findByText("No webhook endpoints yet.");
    fireEvent.click(screen.getByTestId("webhook-create"));
    expect(await screen.findByText("Give an http:// or https:// URL.")).toBeTruthy();
    expect(calls.filter((c) => c.method === "POST")).toHaveLength(0);

    fireEvent.change(screen.getByTestId("webhook-url"), { target: { value: " https://ci.example.com/hooks " } });
    fireEvent.change(screen.getByTestId("webhook-description"), { target: { value: "CI" } });
    fireEvent.click(document.querySelector("input[data-event='task.started']")!);
    fireEvent.click(document.querySelector("input[data-event='task.stopped']")!);
    fireEvent.click(screen.getByTestId("webhook-create"));
    const secret = await findBySelector<HTMLInputElement>("[data-testid=webhook-secret]");
    expect(secret.value).toBe("whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0");
    expect(calls.find((c) => c.method === "POST")!.body).toEqual({
      url: "https://ci.example.com/hooks",
      events: ["task.succeeded", "task.failed"],
      description: "CI",
    });
    fireEvent.click(screen.getByTestId("webhook-done"));
    expect(screen.queryByTestId("webhook-secret")).toBeNull();
    expect(document.body.textContent).not.toContain("whsec_");
  });

  it("shows the server's refusal at the field it names", async () => {
    stubFetchRoutes({
      "GET /api/webhooks": { json: { webhooks: [] } },
      "POST /api/webhooks": {
        status: 400,
        json: { error: { code: "invalid_argument", message: "url: the host 'x' resolves to 10.0.0.1", field: "url" } },
      },
    });
    renderWithI18n(<WebhooksPanel />, "en");
    await screen.findByText("No webhook endpoints yet.");
    fireEvent.change(screen.getByTestId("webhook-url"), { target: { value: "http://x/hook" } });
    fireEvent.click(screen.getByTestId("webhook-create"));
    const error = await findBySelector(".webhook-form .field-error");
    expect(error.textContent).toContain("resolves to 10.0.0.1");
  });

  it("lists the endpoints, shows each one's delivery log with every try, and deletes after a confirmation", async () => {
    let hooks = [HOOK];
    const calls = stubFetchRoutes({
      "GET /api/webhooks": () => ({ json: { webhooks: hooks } }),
      "GET /api/webhooks/wh_1/deliveries": { json: { deliveries: [DELIVERY] } },
      "DELETE /api/webhooks/wh_1": () => {
        hooks = [];
        return { json: { deleted: "wh_1" } };
      },
    });
    renderWithI18n(<WebhooksPanel />, "en");
    const row = await findBySelector("tr[data-webhook-id=wh_1]");
    expect(row.textContent).toContain("https://ci.example.com/hooks");
    expect(row.textContent).toContain("task.failed");
    fireEvent.click(screen.getByTestId("webhook-log-toggle"));
    const delivery = await findBySelector("tr[data-delivery-id=msg_abc]");
    expect(delivery.querySelector("[data-testid=webhook-delivery-state]")!.textContent).toBe("delivered");
    const tries = [...delivery.querySelectorAll("[data-testid=webhook-attempt]")].map((li) => li.textContent ?? "");
    expect(tries).toHaveLength(3);
    expect(tries[0]).toContain("500");
    expect(tries[0]).toContain("next try");
    expect(tries[1]).toContain("no answer");
    expect(tries[1]).toContain("timed out after 10s");
    expect(tries[2]).toContain("204");
    expect(tries[2]).not.toContain("next try");

    fireEvent.click(screen.getByText("Delete"));
    expect((await screen.findByRole("dialog")).textContent).toContain("https://ci.example.com/hooks");
    fireEvent.click(screen.getByTestId("confirm-ok"));
    await screen.findByText("No webhook endpoints yet.");
    await waitFor(() => expect(calls.some((c) => c.method === "DELETE")).toBe(true));
  });
});
