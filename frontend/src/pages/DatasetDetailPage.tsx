import { useEffect, useState } from "react";
import { Link, useNavigate, useParams } from "react-router-dom";
import { api, ApiError } from "../api/client";
import type { DatasetDetail } from "../api/types";
import { ConfirmDialog, ErrorBanner, Spinner } from "../components/ui";
import { useI18n } from "../i18n";
import { datasetRef } from "../lib/datasets";
import { formatBytes, formatDateTime, formatNumber } from "../lib/format";
import { deleteErrorText } from "./DatasetsPage";

function statText(value: unknown): string {
  return value !== null && typeof value === "object" ? JSON.stringify(value) : formatNumber(value);
}

/** One dataset: what it is, its stats, its first rows, and delete. */
export function DatasetDetailPage() {
  const { datasetId = "" } = useParams();
  const { t } = useI18n();
  const navigate = useNavigate();
  const [dataset, setDataset] = useState<DatasetDetail | null>(null);
  const [loadError, setLoadError] = useState<ApiError | Error | null>(null);
  const [actionError, setActionError] = useState<string | null>(null);
  const [confirm, setConfirm] = useState(false);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    const controller = new AbortController();
    api
      .dataset(datasetId, controller.signal)
      .then((d) => setDataset(d))
      .catch((err) => {
        if ((err as Error)?.name !== "AbortError") setLoadError(err as Error);
      });
    return () => controller.abort();
  }, [datasetId]);

  const onDelete = async () => {
    setBusy(true);
    try {
      await api.deleteDataset(datasetId);
      navigate("/datasets", { replace: true });
    } catch (err) {
      setActionError(deleteErrorText(t, err));
      setConfirm(false);
    } finally {
      setBusy(false);
    }
  };

  const back = (
    <Link to="/datasets" className="back">
      ← {t("datasets.back")}
    </Link>
  );
  if (loadError) {
    const notFound = loadError instanceof ApiError && loadError.status === 404;
    return (
      <div className="page">
        {back}
        <ErrorBanner message={notFound ? t("datasets.notFound", { id: datasetId }) : loadError.message} />
      </div>
    );
  }
  if (!dataset) {
    return (
      <div className="page">
        {back}
        <div className="card muted">
          <Spinner /> {t("common.loading")}
        </div>
      </div>
    );
  }
  const stats = Object.entries(dataset.stats ?? {});
  const preview = dataset.preview ?? [];
  return (
    <div className="page dataset-page" data-dataset-id={dataset.id}>
      {back}
      <header className="page-head">
        <div>
          <h1 className="monitor-title">
            <code className="type-code big">{dataset.type}</code>
            <span>{dataset.name}</span>
          </h1>
          <p className="muted small">
            {t("datasets.col.rows")}: {dataset.rows} · {t("datasets.col.size")}: {formatBytes(dataset.size)} ·{" "}
            {t("datasets.col.created")}: {formatDateTime(dataset.created_at)} · {t("datasets.col.owner")}:{" "}
            {dataset.owner}
          </p>
        </div>
        <div className="head-actions">
          <button type="button" className="btn btn-danger" onClick={() => setConfirm(true)} data-testid="delete-dataset">
            {t("common.delete")}
          </button>
        </div>
      </header>
      <ErrorBanner message={actionError} onClose={() => setActionError(null)} />
      <section className="card">
        <dl className="kv kv-wide">
          <div>
            <dt>{t("datasets.ref")}</dt>
            <dd>
              <code data-testid="dataset-ref">{datasetRef(dataset.id)}</code>
            </dd>
          </div>
          <div>
            <dt>{t("datasets.col.sha256")}</dt>
            <dd>
              <code className="mono">{dataset.sha256}</code>
            </dd>
          </div>
        </dl>
      </section>
      {stats.length ? (
        <section className="card" data-testid="dataset-stats">
          <h2>{t("datasets.stats")}</h2>
          <dl className="kv">
            {stats.map(([k, v]) => (
              <div key={k}>
                <dt>{k}</dt>
                <dd className="mono">{statText(v)}</dd>
              </div>
            ))}
          </dl>
        </section>
      ) : null}
      <section className="card" data-testid="dataset-preview">
        <h2>{t("datasets.preview", { n: preview.length })}</h2>
        {preview.length === 0 ? (
          <p className="muted">{t("datasets.noPreview")}</p>
        ) : (
          <ol className="preview-rows">
            {preview.map((row, i) => (
              <li key={i}>
                <span className="preview-line muted">{i + 1}</span>
                <pre className="code-block">{JSON.stringify(row, null, 2)}</pre>
              </li>
            ))}
          </ol>
        )}
      </section>
      <ConfirmDialog
        open={confirm}
        title={t("datasets.deleteTitle")}
        message={t("datasets.deleteConfirm", { name: dataset.name })}
        confirmLabel={t("common.delete")}
        danger
        busy={busy}
        onConfirm={() => void onDelete()}
        onCancel={() => setConfirm(false)}
      />
    </div>
  );
}
