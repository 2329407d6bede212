import { ApiError } from "../api/client";
import { useI18n } from "../i18n";
import { parseUploadProblems } from "../lib/datasets";
import { ProblemTable } from "./ProblemTable";

/**
 * Why an upload was refused. A 400 names the file's line and field ("train.jsonl line 7: chosen.text: Field
 * required"): shown as a table with the line number in its own column, and the server's text verbatim below it.
 */
export function UploadErrorReport({ error }: { error: unknown }) {
  const { t } = useI18n();
  if (error instanceof ApiError && error.status === 413) {
    return (
      <div className="banner banner-error upload-error" role="alert" data-testid="upload-error" data-status={413}>
        <div>
          <strong>{t("datasets.tooLarge")}</strong>
          {error.message ? <div className="muted small">{error.message}</div> : null}
        </div>
      </div>
    );
  }
  if (error instanceof ApiError && error.status === 400) {
    const problems = parseUploadProblems(error.message);
    const located = problems.filter((p) => p.line !== null);
    return (
      <section className="card report report-bad upload-error" role="alert" data-testid="upload-error" data-status={400}>
        <div className="report-head">
          <span className="report-icon bad" aria-hidden>
            !
          </span>
          <h3>{t("datasets.invalid")}</h3>
        </div>
        {located.length ? (
          <ProblemTable problems={located.map((p) => ({ ...p, field: p.field ?? error.field }))} />
        ) : null}
        <pre className="code-block upload-error-text" data-testid="upload-error-text">
          {error.field && !located.length ? `${error.field}: ` : ""}
          {error.message}
        </pre>
      </section>
    );
  }
  const message = error instanceof Error ? error.message : String(error);
  return (
    <div className="banner banner-error" role="alert" data-testid="upload-error">
      <span>{t("datasets.uploadFailed", { message })}</span>
    </div>
  );
}
