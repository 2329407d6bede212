import { Fragment, useCallback, useEffect, useState } from "react";
import { ApiError } from "../api/client";
import {
  WEBHOOK_EVENTS,
  webhooks,
  type CreatedWebhook,
  type WebhookDelivery,
  type WebhookInfo,
} from "../api/webhooks";
import { useI18n, type MessageKey } from "../i18n";
import { formatDateTime } from "../lib/format";
import { ShownOnceSecret } from "./ShownOnceSecret";
import { ConfirmDialog, ErrorBanner, Spinner } from "./ui";

const MAX_DESCRIPTION = 500;

/** The form's own checks (the control plane checks the rest: the host, private addresses). */
export function webhookFormProblem(url: string, events: readonly string[]): { field: "url" | "events"; message: MessageKey } | null {
  if (!/^https?:\/\/[^\s/]+/i.test(url.trim())) return { field: "url", message: "settings.hooks.urlRequired" };
  if (events.length === 0) return { field: "events", message: "settings.hooks.eventRequired" };
  return null;
}

/** The caller's webhook endpoints: add one (the signing secret is shown this once), the list with delete, and each
 * endpoint's delivery log (every try: time, HTTP status or error, duration, next try). */
export function WebhooksPanel() {
  const { t } = useI18n();
  const [hooks, setHooks] = useState<WebhookInfo[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [created, setCreated] = useState<CreatedWebhook | null>(null);
  const [toDelete, setToDelete] = useState<WebhookInfo | null>(null);
  const [deleting, setDeleting] = useState(false);
  const [open, setOpen] = useState<string | null>(null);

  const load = useCallback(async () => {
    try {
      setHooks((await webhooks.list()).webhooks ?? []);
      setError(null);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
      setHooks((prev) => prev ?? []);
    }
  }, []);

  useEffect(() => {
    void load();
  }, [load]);

  const onDelete = async () => {
    if (!toDelete) return;
    setDeleting(true);
    try {
      await webhooks.remove(toDelete.id);
      if (open === toDelete.id) setOpen(null);
      await load();
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setDeleting(false);
      setToDelete(null);
    }
  };

  return (
    <section className="card webhooks" data-testid="webhooks">
      <div className="card-head">
        <div>
          <h2>{t("settings.hooks.title")}</h2>
          <p className="muted small">{t("settings.hooks.subtitle")}</p>
        </div>
      </div>
      <NewWebhookForm
        onCreated={(hook) => {
          setCreated(hook);
          void load();
        }}
      />
      {created ? <SecretReveal created={created} onDone={() => setCreated(null)} /> : null}
      <ErrorBanner message={error} onClose={() => setError(null)} />
      <WebhookTable
        hooks={hooks}
        open={open}
        onToggle={(id) => setOpen((current) => (current === id ? null : id))}
        onDelete={setToDelete}
      />
      <ConfirmDialog
        open={toDelete !== null}
        title={t("settings.hooks.deleteTitle")}
        message={t("settings.hooks.deleteConfirm", { url: toDelete?.url ?? "" })}
        confirmLabel={t("common.delete")}
        danger
        busy={deleting}
        onConfirm={() => void onDelete()}
        onCancel={() => setToDelete(null)}
      />
    </section>
  );
}

function NewWebhookForm({ onCreated }: { onCreated: (hook: CreatedWebhook) => void }) {
  const { t } = useI18n();
  const [url, setUrl] = useState("");
  const [description, setDescription] = useState("");
  const [events, setEvents] = useState<string[]>([...WEBHOOK_EVENTS]);
  const [problem, setProblem] = useState<{ field: string | null; message: string } | null>(null);
  const [busy, setBusy] = useState(false);

  const onSubmit = async () => {
    const found = webhookFormProblem(url, events);
    setProblem(found ? { field: found.field, message: t(found.message) } : null);
    if (found) return;
    setBusy(true);
    try {
      const hook = await webhooks.create(url.trim(), events, description.trim());
      setUrl("");
      setDescription("");
      setEvents([...WEBHOOK_EVENTS]);
      onCreated(hook);
    } catch (err) {
      setProblem({ field: err instanceof ApiError ? err.field : null, message: err instanceof Error ? err.message : String(err) });
    } finally {
      setBusy(false);
    }
  };

  const at = (field: string) => (problem?.field === field ? problem.message : null);
  const other = problem && !["url", "events", "description"].includes(problem.field ?? "") ? problem.message : null;
  return (
    <form
      className="webhook-form"
      onSubmit={(e) => {
        e.preventDefault();
        void onSubmit();
      }}
      noValidate
    >
      <label className="form-field">
        <span className="field-title">{t("settings.hooks.url")}</span>
        <input
          type="text"
          inputMode="url"
          value={url}
          placeholder="https://example.com/hooks/bugagaric"
          onChange={(e) => setUrl(e.target.value)}
          aria-invalid={at("url") ? true : undefined}
          data-testid="webhook-url"
        />
        {at("url") ? <span className="field-error">{at("url")}</span> : null}
      </label>
      <label className="form-field">
        <span className="field-title">{t("settings.hooks.description")}</span>
        <input
          type="text"
          value={description}
          maxLength={MAX_DESCRIPTION}
          placeholder={t("settings.hooks.descriptionPlaceholder")}
          onChange={(e) => setDescription(e.target.value)}
          data-testid="webhook-description"
        />
        {at("description") ? <span className="field-error">{at("description")}</span> : null}
      </label>
      <fieldset className="form-field webhook-events">
        <legend className="field-title">{t("settings.hooks.events")}</legend>
        {WEBHOOK_EVENTS.map((event) => (
          <label key={event} className="check">
            <input
              type="checkbox"
              checked={events.includes(event)}
              disabled={busy}
              data-event={event}
              onChange={(e) =>
                setEvents((current) =>
                  WEBHOOK_EVENTS.filter((name) => (name === event ? e.target.checked : current.includes(name))),
                )
              }
            />
            <code>{event}</code>
          </label>
        ))}
        {at("events") ? <span className="field-error">{at("events")}</span> : null}
      </fieldset>
      <div className="webhook-form-actions">
        <button type="submit" className="btn btn-primary" disabled={busy} data-testid="webhook-create">
          {busy ? <Spinner /> : null}
          {t("settings.hooks.create")}
        </button>
      </div>
      {other ? <ErrorBanner message={other} /> : null}
    </form>
  );
}

/** The new endpoint's secret, this once. */
function SecretReveal({ created, onDone }: { created: CreatedWebhook; onDone: () => void }) {
  const { t } = useI18n();
  return (
    <ShownOnceSecret title={t("settings.hooks.createdTitle", { url: created.url })} warning={t("settings.hooks.showOnce")}
      secret={created.secret} label={t("settings.hooks.secretLabel")} testId="webhook" onDone={onDone} />
  );
}

function WebhookTable({
  hooks,
  open,
  onToggle,
  onDelete,
}: {
  hooks: WebhookInfo[] | null;
  open: string | null;
  onToggle: (id: string) => void;
  onDelete: (hook: WebhookInfo) => void;
}) {
  const { t } = useI18n();
  if (hooks === null) {
    return (
      <div className="muted pad">
        <Spinner /> {t("common.loading")}
      </div>
    );
  }
  if (hooks.length === 0) return <div className="empty pad muted">{t("settings.hooks.empty")}</div>;
  return (
    <div className="table-wrap">
      <table className="table webhooks-table">
        <thead>
          <tr>
            <th>{t("settings.hooks.url")}</th>
            <th>{t("settings.hooks.events")}</th>
            <th>{t("settings.keys.col.created")}</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {hooks.map((hook) => (
            <Fragment key={hook.id}>
              <tr data-webhook-id={hook.id}>
                <td>
                  <code>{hook.url}</code>
                  {hook.description ? <div className="muted small">{hook.description}</div> : null}
                </td>
                <td>
                  {hook.events.map((event) => (
                    <code key={event} className="type-code">
                      {event}
                    </code>
                  ))}
                </td>
                <td className="muted small">{formatDateTime(hook.created_at)}</td>
                <td>
                  <button type="button" className="link" onClick={() => onToggle(hook.id)} data-testid="webhook-log-toggle">
                    {open === hook.id ? t("settings.hooks.hideLog") : t("settings.hooks.showLog")}
                  </button>{" "}
                  <button type="button" className="link danger" onClick={() => onDelete(hook)}>
                    {t("common.delete")}
                  </button>
                </td>
              </tr>
              {open === hook.id ? (
                <tr className="webhook-log-row">
                  <td colSpan={4}>
                    <DeliveryLog webhookId={hook.id} />
                  </td>
                </tr>
              ) : null}
            </Fragment>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** One endpoint's newest deliveries, each with every try. */
function DeliveryLog({ webhookId }: { webhookId: string }) {
  const { t } = useI18n();
  const [deliveries, setDeliveries] = useState<WebhookDelivery[] | null>(null);
  const [error, setError] = useState<string | null>(null);

  const load = useCallback(async () => {
    try {
      setDeliveries((await webhooks.deliveries(webhookId)).deliveries);
      setError(null);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  }, [webhookId]);

  useEffect(() => {
    void load();
  }, [load]);

  return (
    <div className="webhook-log" data-testid="webhook-log">
      <div className="webhook-log-head">
        <strong>{t("settings.hooks.log")}</strong>{" "}
        <button type="button" className="link" onClick={() => void load()} data-testid="webhook-log-refresh">
          {t("settings.hooks.refresh")}
        </button>
      </div>
      <ErrorBanner message={error} onClose={() => setError(null)} />
      {deliveries === null ? (
        <Spinner />
      ) : deliveries.length === 0 ? (
        <div className="muted small">{t("settings.hooks.noDeliveries")}</div>
      ) : (
        <table className="table webhook-deliveries">
          <thead>
            <tr>
              <th>{t("settings.hooks.col.event")}</th>
              <th>{t("settings.hooks.col.task")}</th>
              <th>{t("settings.hooks.col.state")}</th>
              <th>{t("settings.hooks.col.attempts")}</th>
            </tr>
          </thead>
          <tbody>
            {deliveries.map((delivery) => (
              <tr key={delivery.id} data-delivery-id={delivery.id}>
                <td>
                  <code>{delivery.event_type}</code>
                  <div className="muted small">{formatDateTime(delivery.created_at)}</div>
                </td>
                <td>
                  <code>{delivery.task_id}</code>
                </td>
                <td data-testid="webhook-delivery-state">
                  {t(`settings.hooks.state.${delivery.state}` as MessageKey)}
                  {delivery.state === "pending" && delivery.next_attempt_at ? (
                    <div className="muted small">
                      {t("settings.hooks.nextTry", { time: formatDateTime(delivery.next_attempt_at) })}
                    </div>
                  ) : null}
                </td>
                <td>
                  <ol className="webhook-attempts">
                    {delivery.attempt_log.map((attempt) => (
                      <li key={attempt.number} data-testid="webhook-attempt">
                        <span className="muted small">{formatDateTime(attempt.time)}</span>{" "}
                        <strong>{attempt.status_code ?? t("settings.hooks.noAnswer")}</strong>
                        {attempt.error ? <span className="muted small"> {attempt.error}</span> : null}{" "}
                        <span className="muted small">{attempt.duration_ms} ms</span>
                        {attempt.next_attempt_at ? (
                          <span className="muted small">
                            {" "}
                            · {t("settings.hooks.nextTry", { time: formatDateTime(attempt.next_attempt_at) })}
                          </span>
                        ) : null}
                      </li>
                    ))}
                  </ol>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
