// The settings page's API keys: the form's checks before any call, the key shown once with a copy button, the list
// with last use, and revoking after a confirmation.
import { fireEvent, screen, waitFor } from "@testing-library/react";
import { MemoryRouter } from "react-router-dom";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { setToken } from "../api/client";
import { stubFetchRoutes } from "../test/fetchRoutes";
import { findBySelector, renderWithI18n } from "../test/render";
import { ApiKeysPanel } from "./ApiKeysPanel";

const KEY = {
  id: "k1",
  name: "nightly CI",
  scopes: ["read"],
  prefix: "bgk_AbCdEf",
  created_at: "2026-03-01T10:00:00Z",
  last_used_at: null,
};
const USED = { ...KEY, id: "k2", name: "deploy bot", scopes: ["submit"], last_used_at: "2026-03-02T08:30:00Z" };

beforeEach(() => setToken("tok"));
afterEach(() => vi.unstubAllGlobals());

function renderPage() {
  return renderWithI18n(
    <MemoryRouter>
      <ApiKeysPanel />
    </MemoryRouter>,
    "en",
  );
}

describe("ApiKeysPanel", () => {
  it("lists the keys by prefix with their scopes and when they were last used", async () => {
    stubFetchRoutes({ "GET /api/auth/keys": { json: { keys: [KEY, USED] } } });
    renderPage();
    const unused = await findBySelector("tr[data-key-id=k1]");
    expect(unused.textContent).toContain("bgk_AbCdEf…");
    expect(unused.querySelector("[data-testid=api-key-last-used]")!.textContent).toBe("never");
    const used = document.querySelector("tr[data-key-id=k2]")!;
    expect(used.querySelector("[data-testid=api-key-last-used]")!.textContent).not.toBe("never");
  });

  it("checks the form before calling, then shows the new key once", async () => {
    const calls = stubFetchRoutes({
      "GET /api/auth/keys": { json: { keys: [] } },
      "POST /api/auth/keys": { status: 201, json: { ...KEY, scopes: ["read", "submit"], key: "bgk_secret-value" } },
    });
    renderPage();
    await screen.findByText("No API keys yet.");
    fireEvent.click(screen.getByTestId("api-key-create"));
    expect(await screen.findByText("Give the key a name.")).toBeTruthy();
    fireEvent.change(screen.getByTestId("api-key-name"), { target: { value: "  nightly CI " } });
    fireEvent.click(document.querySelector("input[data-scope=read]")!); // unchecks the default
    fireEvent.click(screen.getByTestId("api-key-create"));
    expect(await screen.findByText("Choose at least one scope.")).toBeTruthy();
    expect(calls.filter((c) => c.method === "POST")).toHaveLength(0);

    fireEvent.click(document.querySelector("input[data-scope=read]")!);
    fireEvent.click(document.querySelector("input[data-scope=submit]")!);
    const read = document.querySelector<HTMLInputElement>("input[data-scope=read]")!;
    expect(read.checked && read.disabled).toBe(true); // granted by submit
    fireEvent.click(screen.getByTestId("api-key-create"));
    const secret = await findBySelector<HTMLInputElement>("[data-testid=api-key-secret]");
    expect(secret.value).toBe("bgk_secret-value");
    expect(calls.find((c) => c.method === "POST")!.body).toEqual({ name: "nightly CI", scopes: ["submit"] });
    expect(screen.getByTestId("api-key-reveal").textContent).toContain("shown this once");

    const writeText = vi.fn(async () => undefined);
    Object.defineProperty(navigator, "clipboard", { value: { writeText }, configurable: true });
    fireEvent.click(screen.getByTestId("api-key-copy"));
    await screen.findByText("Copied");
    expect(writeText).toHaveBeenCalledWith("bgk_secret-value");

    fireEvent.click(screen.getByTestId("api-key-done"));
    expect(screen.queryByTestId("api-key-secret")).toBeNull();
    expect(document.body.textContent).not.toContain("bgk_secret-value");
  });

  it("shows the server's refusal at the field it names", async () => {
    stubFetchRoutes({
      "GET /api/auth/keys": { json: { keys: [] } },
      "POST /api/auth/keys": {
        status: 400,
        json: { error: { code: "invalid_argument", message: "'name' must not hold control characters", field: "name" } },
      },
    });
    renderPage();
    fireEvent.change(await screen.findByTestId("api-key-name"), { target: { value: "ok name" } });
    fireEvent.click(screen.getByTestId("api-key-create"));
    expect(await screen.findByText("'name' must not hold control characters")).toBeTruthy();
    expect(screen.getByTestId("api-key-name").getAttribute("aria-invalid")).toBe("true");
  });

  it("revokes after a confirmation", async () => {
    let keys = [KEY];
    const calls = stubFetchRoutes({
      "GET /api/auth/keys": () => ({ json: { keys } }),
      "DELETE /api/auth/keys/k1": () => {
        keys = [];
        return { json: { deleted: "k1" } };
      },
    });
    renderPage();
    await findBySelector("tr[data-key-id=k1]");
    fireEvent.click(screen.getByRole("button", { name: "Revoke" }));
    expect(screen.getByRole("dialog").textContent).toContain("nightly CI");
    fireEvent.click(screen.getByTestId("confirm-ok"));
    await screen.findByText("Revoked “nightly CI”");
    await waitFor(() => expect(document.querySelector("tr[data-key-id=k1]")).toBeNull());
    expect(calls.filter((c) => c.method === "DELETE")).toHaveLength(1);
  });
});
