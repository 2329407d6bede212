import { useCallback, useEffect, useState } from "react";
import { ApiError } from "../api/client";
import { API_KEY_SCOPES, apiKeys, type ApiKeyInfo, type CreatedApiKey } from "../api/apiKeys";
import { useI18n, type MessageKey } from "../i18n";
import { grantedScopes, keyFormProblem, MAX_KEY_NAME, toggleScope, type KeyFormProblem } from "../lib/apiKeys";
import { formatDateTime } from "../lib/format";
import { ShownOnceSecret } from "./ShownOnceSecret";
import { ConfirmDialog, ErrorBanner, Spinner } from "./ui";

/** The caller's API keys: make one (name + scopes; the key is shown this once, with a copy button), the list with
 * when each was last used, and revoking one after a confirmation. */
export function ApiKeysPanel() {
  const { t } = useI18n();
  const [keys, setKeys] = useState<ApiKeyInfo[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [created, setCreated] = useState<CreatedApiKey | null>(null);
  const [toRevoke, setToRevoke] = useState<ApiKeyInfo | null>(null);
  const [revoking, setRevoking] = useState(false);
  const [notice, setNotice] = useState<string | null>(null);

  const load = useCallback(async () => {
    try {
      setKeys((await apiKeys.list()).keys ?? []);
      setError(null);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
      setKeys((prev) => prev ?? []);
    }
  }, []);

  useEffect(() => {
    void load();
  }, [load]);

  const onRevoke = async () => {
    if (!toRevoke) return;
    setRevoking(true);
    try {
      await apiKeys.remove(toRevoke.id);
      setNotice(t("settings.keys.revoked", { name: toRevoke.name }));
      await load();
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setRevoking(false);
      setToRevoke(null);
    }
  };

  return (
    <section className="card api-keys" data-testid="api-keys">
      <div className="card-head">
        <div>
          <h2>{t("settings.keys.title")}</h2>
          <p className="muted small">{t("settings.keys.subtitle")}</p>
        </div>
      </div>
      <NewKeyForm
        onCreated={(key) => {
          setCreated(key);
          setNotice(null);
          void load();
        }}
      />
      {created ? <NewKeyReveal created={created} onDone={() => setCreated(null)} /> : null}
      <ErrorBanner message={error} onClose={() => setError(null)} />
      {notice ? <div className="banner banner-info">{notice}</div> : null}
      <KeyTable keys={keys} onRevoke={setToRevoke} />
      <ConfirmDialog
        open={toRevoke !== null}
        title={t("settings.keys.revokeTitle")}
        message={t("settings.keys.revokeConfirm", { name: toRevoke?.name ?? "" })}
        confirmLabel={t("settings.keys.revoke")}
        danger
        busy={revoking}
        onConfirm={() => void onRevoke()}
        onCancel={() => setToRevoke(null)}
      />
    </section>
  );
}

function NewKeyForm({ onCreated }: { onCreated: (key: CreatedApiKey) => void }) {
  const { t } = useI18n();
  const [name, setName] = useState("");
  const [scopes, setScopes] = useState<string[]>(["read"]);
  const [problem, setProblem] = useState<KeyFormProblem | null>(null);
  const [serverProblem, setServerProblem] = useState<{ field: string | null; message: string } | null>(null);
  const [busy, setBusy] = useState(false);
  const granted = grantedScopes(scopes);

  const onSubmit = async () => {
    setServerProblem(null);
    const found = keyFormProblem(name, scopes);
    setProblem(found);
    if (found) return;
    setBusy(true);
    try {
      const key = await apiKeys.create(name.trim(), scopes);
      setName("");
      setScopes(["read"]);
      onCreated(key);
    } catch (err) {
      const field = err instanceof ApiError ? err.field : null;
      setServerProblem({ field, message: err instanceof Error ? err.message : String(err) });
    } finally {
      setBusy(false);
    }
  };

  const nameError = problem?.field === "name" ? t(problem.message) : serverProblem?.field === "name" ? serverProblem.message : null;
  const scopesError =
    problem?.field === "scopes" ? t(problem.message) : serverProblem?.field === "scopes" ? serverProblem.message : null;
  const otherError = serverProblem && serverProblem.field !== "name" && serverProblem.field !== "scopes" ? serverProblem.message : null;

  return (
    <form
      className="api-key-form"
      onSubmit={(e) => {
        e.preventDefault();
        void onSubmit();
      }}
      noValidate
    >
      <label className="form-field">
        <span className="field-title">{t("settings.keys.name")}</span>
        <input
          type="text"
          value={name}
          maxLength={MAX_KEY_NAME + 20}
          placeholder={t("settings.keys.namePlaceholder")}
          onChange={(e) => setName(e.target.value)}
          aria-invalid={nameError ? true : undefined}
          data-testid="api-key-name"
        />
        {nameError ? <span className="field-error">{nameError}</span> : null}
      </label>
      <fieldset className="form-field api-key-scopes">
        <legend className="field-title">{t("settings.keys.scopes")}</legend>
        {API_KEY_SCOPES.map((scope) => {
          const implied = granted.includes(scope) && !scopes.includes(scope);
          return (
            <label key={scope} className="check" title={t(`settings.keys.scope.${scope}.help` as MessageKey)}>
              <input
                type="checkbox"
                checked={granted.includes(scope)}
                disabled={implied || busy}
                onChange={(e) => setScopes(toggleScope(scopes, scope, e.target.checked))}
                data-scope={scope}
              />
              <span>
                <strong>{scope}</strong>{" "}
                <span className="muted small">{t(`settings.keys.scope.${scope}.help` as MessageKey)}</span>
              </span>
            </label>
          );
        })}
        {scopesError ? <span className="field-error">{scopesError}</span> : null}
      </fieldset>
      <div className="api-key-form-actions">
        <button type="submit" className="btn btn-primary" disabled={busy} data-testid="api-key-create">
          {busy ? <Spinner /> : null}
          {t("settings.keys.create")}
        </button>
      </div>
      {otherError ? <ErrorBanner message={otherError} /> : null}
    </form>
  );
}

/** The new key, this once. */
function NewKeyReveal({ created, onDone }: { created: CreatedApiKey; onDone: () => void }) {
  const { t } = useI18n();
  return (
    <ShownOnceSecret title={t("settings.keys.createdTitle", { name: created.name })} warning={t("settings.keys.showOnce")}
      secret={created.key} label={t("settings.keys.keyLabel")} testId="api-key" onDone={onDone} />
  );
}

function KeyTable({ keys, onRevoke }: { keys: ApiKeyInfo[] | null; onRevoke: (key: ApiKeyInfo) => void }) {
  const { t } = useI18n();
  if (keys === null) {
    return (
      <div className="muted pad">
        <Spinner /> {t("common.loading")}
      </div>
    );
  }
  if (keys.length === 0) return <div className="empty pad muted">{t("settings.keys.empty")}</div>;
  return (
    <div className="table-wrap">
      <table className="table api-keys-table">
        <thead>
          <tr>
            <th>{t("settings.keys.col.name")}</th>
            <th>{t("settings.keys.col.key")}</th>
            <th>{t("settings.keys.col.scopes")}</th>
            <th>{t("settings.keys.col.created")}</th>
            <th>{t("settings.keys.col.lastUsed")}</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {keys.map((key) => (
            <tr key={key.id} data-key-id={key.id}>
              <td>{key.name}</td>
              <td>
                <code>{key.prefix}…</code>
              </td>
              <td>
                {key.scopes.map((scope) => (
                  <code key={scope} className="type-code scope-code">
                    {scope}
                  </code>
                ))}
              </td>
              <td className="muted small">{formatDateTime(key.created_at)}</td>
              <td className="muted small" data-testid="api-key-last-used">
                {key.last_used_at ? formatDateTime(key.last_used_at) : t("settings.keys.neverUsed")}
              </td>
              <td>
                <button type="button" className="link danger" onClick={() => onRevoke(key)}>
                  {t("settings.keys.revoke")}
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
