import { useCallback, useEffect, useMemo, useState } from "react";
import { useLocation, useNavigate, useSearchParams } from "react-router-dom";
import { api, ApiError } from "../api/client";
import { isSavedTemplate, savedConfig, type SavedTemplate, type TypeTemplate, type ValidationReport } from "../api/types";
import { useUsername } from "../auth/AuthContext";
import { ProblemTable } from "../components/ProblemTable";
import { SchemaForm } from "../components/SchemaForm";
import { ConfirmDialog, ErrorBanner, Spinner } from "../components/ui";
import { useI18n } from "../i18n";
import {
  buildConfig,
  fieldKeyOf,
  fieldsFromSchema,
  initialValues,
  type FieldError,
  type FieldSpec,
  type FormValue,
  type FormValues,
} from "../schema/form";
import { formatDateTime, formatNumber } from "../lib/format";
import { useInputSources, usePickerAddons } from "../lib/inputSources";
import { prefillOf } from "../lib/prefill";
import { clearDraft, isEdited, loadDraft, saveDraft, withDraft } from "../lib/drafts";
import { typeCard } from "../lib/fieldTexts";

interface TokenStats {
  p50?: number;
  p95?: number;
  max?: number;
  mean?: number;
  max_length?: number;
  truncated_rows?: number;
  rows?: number;
}

function isTokenStats(v: unknown): v is TokenStats {
  return !!v && typeof v === "object" && !Array.isArray(v) && ("p50" in v || "max" in v || "truncated_rows" in v);
}

export function ValidationReportView({ report }: { report: ValidationReport }) {
  const { t } = useI18n();
  const tokenStats = Object.entries(report.stats ?? {}).filter(([, v]) => isTokenStats(v)) as [string, TokenStats][];
  const otherStats = Object.entries(report.stats ?? {}).filter(([, v]) => !isTokenStats(v));
  return (
    <section className={`card report ${report.ok ? "report-ok" : "report-bad"}`} data-testid="validation-report">
      <div className="report-head">
        <span className={`report-icon ${report.ok ? "ok" : "bad"}`} aria-hidden>
          {report.ok ? "✓" : "!"}
        </span>
        <div>
          <h3>{report.ok ? t("report.ok") : t("report.bad")}</h3>
          <div className="muted">
            {t("report.rows", { n: report.rows })}
            {report.agent_id ? ` · ${t("report.agent")}: ${report.agent_id}` : ""}
          </div>
        </div>
      </div>
      {report.error ? (
        <div className="banner banner-error">
          {report.error.field ? <code>{report.error.field}</code> : null} {report.error.message}
        </div>
      ) : null}
      {report.problems.length ? (
        <>
          <h4>{t("report.problems", { n: report.problems.length })}</h4>
          <ProblemTable problems={report.problems} />
        </>
      ) : null}
      {tokenStats.length ? (
        <>
          <h4>{t("report.tokens")}</h4>
          <div className="table-wrap">
            <table className="table compact">
              <thead>
                <tr>
                  <th />
                  <th>p50</th>
                  <th>p95</th>
                  <th>max</th>
                  <th>{t("report.mean")}</th>
                  <th>max_length</th>
                  <th>{t("report.truncated")}</th>
                </tr>
              </thead>
              <tbody>
                {tokenStats.map(([name, s]) => (
                  <tr key={name}>
                    <td>
                      <code>{name}</code>
                    </td>
                    <td className="num">{formatNumber(s.p50)}</td>
                    <td className="num">{formatNumber(s.p95)}</td>
                    <td className="num">{formatNumber(s.max)}</td>
                    <td className="num">{formatNumber(s.mean)}</td>
                    <td className="num">{formatNumber(s.max_length)}</td>
                    <td className={`num${s.truncated_rows ? " warn" : ""}`}>{formatNumber(s.truncated_rows)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </>
      ) : null}
      {otherStats.length ? (
        <dl className="kv">
          {otherStats.map(([k, v]) => (
            <div key={k}>
              <dt>{k}</dt>
              <dd>{typeof v === "object" ? JSON.stringify(v) : formatNumber(v)}</dd>
            </div>
          ))}
        </dl>
      ) : null}
      {report.warnings.length ? (
        <>
          <h4>{t("report.warnings")}</h4>
          <ul className="warnings">
            {report.warnings.map((w, i) => (
              <li key={i}>{w}</li>
            ))}
          </ul>
        </>
      ) : null}
    </section>
  );
}

function focusField(name: string) {
  // After React has rendered the (possibly just unfolded) field.
  window.setTimeout(() => {
    const el = document.getElementById(`field-${name}`);
    el?.scrollIntoView?.({ block: "center", behavior: "smooth" });
    (el as HTMLElement | null)?.focus?.({ preventScroll: true });
  }, 30);
}

export function FinetunePage() {
  const { t, lang } = useI18n();
  const user = useUsername();
  const navigate = useNavigate();
  const location = useLocation();
  const [params, setParams] = useSearchParams();
  const [types, setTypes] = useState<TypeTemplate[] | null>(null);
  const [saved, setSaved] = useState<SavedTemplate[]>([]);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [values, setValues] = useState<FormValues>({});
  const [touched, setTouched] = useState<Record<string, boolean>>({});
  const [submitted, setSubmitted] = useState(false);
  const [serverErrors, setServerErrors] = useState<Record<string, FieldError>>({});
  const [banner, setBanner] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [report, setReport] = useState<ValidationReport | null>(null);
  const [busy, setBusy] = useState<"validate" | "start" | "save" | null>(null);
  const [templateName, setTemplateName] = useState("");
  const [toDelete, setToDelete] = useState<SavedTemplate | null>(null);
  // The form opened with the user's unsaved edits of this type (lib/drafts.ts): say so, and offer to discard them.
  const [draftRestored, setDraftRestored] = useState(false);

  const loadTemplates = useCallback(async () => {
    try {
      const reply = await api.templates();
      const all = reply.templates ?? [];
      setTypes(all.filter((e) => !isSavedTemplate(e)) as TypeTemplate[]);
      setSaved(all.filter(isSavedTemplate));
      setLoadError(null);
    } catch (err) {
      setLoadError(err instanceof Error ? err.message : String(err));
      setTypes((prev) => prev ?? []);
    }
  }, []);

  useEffect(() => {
    void loadTemplates();
  }, [loadTemplates]);

  const selectedType = params.get("type") ?? types?.[0]?.type ?? "";
  const template = types?.find((x) => x.type === selectedType) ?? null;
  const fields: FieldSpec[] = useMemo(() => fieldsFromSchema(template?.json_schema), [template]);

  // A new type (or first load): its draft if the user was editing it, else the defaults. A task's config handed over
  // by "clone" / "continue training" (lib/prefill.ts) wins over the draft and becomes it, once.
  useEffect(() => {
    if (!template) return;
    const defaults = initialValues(fields, template.default_config);
    const prefill = prefillOf(location.state, template.type);
    let start: FormValues;
    if (prefill) {
      start = initialValues(fields, prefill.config);
      saveDraft(user, template.type, start);
      setNotice(t(prefill.kind === "clone" ? "finetune.clonedFrom" : "finetune.continuingFrom", { id: prefill.from }));
      navigate(`${location.pathname}${location.search}`, { replace: true, state: null });
    } else {
      start = withDraft(fields, defaults, loadDraft(user, template.type));
    }
    setDraftRestored(!prefill && isEdited(start, defaults));
    setValues(start);
    setTouched({});
    setSubmitted(false);
    setServerErrors({});
    setReport(null);
    setBanner(null);
    // Keyed on the type only: reloading the template list (after saving one) must not wipe the form.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [template?.type]);

  const built = useMemo(() => buildConfig(fields, values), [fields, values]);
  const shownErrors: Record<string, FieldError> = {};
  for (const field of fields) {
    const server = serverErrors[field.name];
    const client = built.errors[field.name];
    if (server) shownErrors[field.name] = server;
    else if (client && (submitted || touched[field.name])) shownErrors[field.name] = client;
  }

  const templateType = template?.type ?? "";
  const onChange = useCallback(
    (name: string, value: FormValue) => {
      setValues((prev) => {
        const next = { ...prev, [name]: value };
        if (templateType) saveDraft(user, templateType, next);
        return next;
      });
      setServerErrors((prev) => {
        if (!prev[name]) return prev;
        const next = { ...prev };
        delete next[name];
        return next;
      });
    },
    [templateType, user],
  );
  const sources = useInputSources(templateType);
  const addons = usePickerAddons(templateType, fields, values, sources, onChange);
  const onBlur = (name: string) => setTouched((prev) => (prev[name] ? prev : { ...prev, [name]: true }));

  const chooseType = (type: string) => {
    setParams({ type }, { replace: true });
  };

  /** Client-side check; returns the config or null (and shows the errors). */
  const checked = (): Record<string, unknown> | null => {
    setSubmitted(true);
    setNotice(null);
    const names = Object.keys(built.errors);
    if (names.length) {
      setBanner(t("form.fixErrors", { n: names.length }));
      focusField(names[0]);
      return null;
    }
    setBanner(null);
    return built.config;
  };

  const showApiError = (err: unknown) => {
    if (err instanceof ApiError) {
      const key = fieldKeyOf(err.field, fields);
      if (key) {
        setServerErrors({ [key]: { code: "required", message: err.message } });
        setBanner(t("form.serverFieldError", { field: key }));
        focusField(key);
        return;
      }
      setBanner(err.message);
      return;
    }
    setBanner(err instanceof Error ? err.message : String(err));
  };

  const onValidate = async () => {
    if (!template) return;
    const config = checked();
    if (!config) return;
    setBusy("validate");
    setReport(null);
    try {
      const r = await api.validate(template.type, config);
      setReport(r);
      const key = fieldKeyOf(r.error?.field, fields);
      if (key && r.error) setServerErrors({ [key]: { code: "required", message: r.error.message } });
    } catch (err) {
      showApiError(err);
    } finally {
      setBusy(null);
    }
  };

  const onStart = async () => {
    if (!template) return;
    const config = checked();
    if (!config) return;
    setBusy("start");
    try {
      const task = await api.start(template.type, config);
      clearDraft(user, template.type);
      navigate(`/tasks/${encodeURIComponent(task.id)}`);
    } catch (err) {
      showApiError(err);
      setBusy(null);
    }
  };

  const onSave = async () => {
    if (!template) return;
    const name = templateName.trim();
    if (!name) {
      setBanner(t("templates.nameRequired"));
      return;
    }
    const config = checked();
    if (!config) return;
    setBusy("save");
    try {
      await api.saveTemplate(name, template.type, config);
      setTemplateName("");
      setNotice(t("templates.saved", { name }));
      await loadTemplates();
    } catch (err) {
      if (err instanceof ApiError && err.field === "name") setBanner(err.message);
      else showApiError(err);
    } finally {
      setBusy(null);
    }
  };

  const onLoad = (entry: SavedTemplate) => {
    const target = types?.find((x) => x.type === entry.type);
    if (!target) {
      setBanner(t("templates.unknownType", { type: entry.type }));
      return;
    }
    const loaded = initialValues(fieldsFromSchema(target.json_schema), savedConfig(entry));
    saveDraft(user, target.type, loaded);
    if (target.type === selectedType) {
      setValues(loaded);
      setServerErrors({});
      setReport(null);
    } else {
      chooseType(target.type);
    }
    setNotice(t("templates.loaded", { name: entry.name }));
  };

  const onDelete = async () => {
    if (!toDelete) return;
    try {
      await api.deleteTemplate(toDelete.id);
      setNotice(t("templates.deleted", { name: toDelete.name }));
      await loadTemplates();
    } catch (err) {
      setBanner(err instanceof Error ? err.message : String(err));
    } finally {
      setToDelete(null);
    }
  };

  const onReset = () => {
    if (!template) return;
    clearDraft(user, template.type);
    setDraftRestored(false);
    setValues(initialValues(fields, template.default_config));
    setTouched({});
    setSubmitted(false);
    setServerErrors({});
    setReport(null);
    setBanner(null);
  };

  if (types === null) {
    return (
      <div className="page">
        <h1>{t("finetune.title")}</h1>
        <div className="card muted">
          <Spinner /> {t("common.loading")}
        </div>
      </div>
    );
  }

  return (
    <div className="page finetune-page">
      <header className="page-head">
        <div>
          <h1>{t("finetune.title")}</h1>
          <p className="muted">{t("finetune.subtitle")}</p>
        </div>
      </header>
      <ErrorBanner message={loadError} />

      <h2 className="section-title">{t("finetune.chooseType")}</h2>
      {types.length === 0 && !loadError ? <div className="card muted">{t("finetune.noTypes")}</div> : null}
      <div className="type-cards" role="radiogroup" aria-label={t("finetune.chooseType")}>
        {types.map((tpl) => {
          const card = typeCard(tpl, lang);
          return (
            <button
              type="button"
              key={tpl.type}
              role="radio"
              aria-checked={tpl.type === selectedType}
              className={`type-card${tpl.type === selectedType ? " selected" : ""}`}
              data-type={tpl.type}
              onClick={() => chooseType(tpl.type)}
            >
              <div className="type-card-head">
                <span className="type-name">{card.name}</span>
                <code className="type-code">{tpl.type}</code>
              </div>
              <p className="type-desc">{card.summary}</p>
            </button>
          );
        })}
      </div>

      {template ? (
        <div className="finetune-grid">
          <section className="card form-card">
            <div className="card-head">
              <h2>{t("finetune.config", { type: typeCard(template, lang).name })}</h2>
              <button type="button" className="btn btn-small" onClick={onReset}>
                {t("finetune.reset")}
              </button>
            </div>
            {draftRestored ? (
              <div className="banner banner-info draft-banner" data-testid="draft-restored">
                {t("finetune.draftRestored")}{" "}
                <button type="button" className="link" onClick={onReset} data-testid="discard-draft">
                  {t("finetune.discardDraft")}
                </button>
              </div>
            ) : null}
            <form
              onSubmit={(e) => {
                e.preventDefault();
                void onStart();
              }}
              noValidate
            >
              <SchemaForm
                fields={fields}
                values={values}
                errors={shownErrors}
                onChange={onChange}
                onBlur={onBlur}
                addons={addons}
              />
              <ErrorBanner message={banner} onClose={() => setBanner(null)} />
              {notice ? <div className="banner banner-info">{notice}</div> : null}
              <div className="form-actions">
                <button
                  type="button"
                  className="btn"
                  onClick={() => void onValidate()}
                  disabled={busy !== null}
                  data-testid="validate"
                >
                  {busy === "validate" ? <Spinner /> : null}
                  {busy === "validate" ? t("finetune.validating") : t("finetune.validate")}
                </button>
                <button type="submit" className="btn btn-primary" disabled={busy !== null} data-testid="start">
                  {busy === "start" ? <Spinner /> : null}
                  {t("finetune.start")}
                </button>
              </div>
            </form>
            {report ? <ValidationReportView report={report} /> : null}
          </section>

          <aside className="side-col">
            <section className="card">
              <h3>{t("templates.title")}</h3>
              <div className="save-row">
                <input
                  type="text"
                  placeholder={t("templates.namePlaceholder")}
                  aria-label={t("templates.namePlaceholder")}
                  value={templateName}
                  onChange={(e) => setTemplateName(e.target.value)}
                  data-testid="template-name"
                />
                <button
                  type="button"
                  className="btn btn-small"
                  onClick={() => void onSave()}
                  disabled={busy !== null}
                  data-testid="template-save"
                >
                  {t("templates.save")}
                </button>
              </div>
              {saved.length === 0 ? (
                <p className="muted small">{t("templates.empty")}</p>
              ) : (
                <ul className="saved-list">
                  {saved.map((entry) => (
                    <li key={entry.id} data-template-id={entry.id}>
                      <div className="saved-main">
                        <span className="saved-name">{entry.name}</span>
                        <code className="type-code">{entry.type}</code>
                        {entry.created_at ? <span className="muted small">{formatDateTime(entry.created_at)}</span> : null}
                      </div>
                      <div className="saved-actions">
                        <button type="button" className="link" onClick={() => onLoad(entry)}>
                          {t("templates.load")}
                        </button>
                        <button type="button" className="link danger" onClick={() => setToDelete(entry)}>
                          {t("common.delete")}
                        </button>
                      </div>
                    </li>
                  ))}
                </ul>
              )}
            </section>
            <section className="card data-example" data-testid="data-example">
              <h3>{t("finetune.dataExample")}</h3>
              <p className="muted small">{t("finetune.dataExampleHint")}</p>
              <pre className="code-block">{JSON.stringify(template.data_example, null, 2)}</pre>
            </section>
          </aside>
        </div>
      ) : null}

      <ConfirmDialog
        open={toDelete !== null}
        title={t("templates.deleteTitle")}
        message={t("templates.deleteConfirm", { name: toDelete?.name ?? "" })}
        confirmLabel={t("common.delete")}
        danger
        onConfirm={() => void onDelete()}
        onCancel={() => setToDelete(null)}
      />
    </div>
  );
}
