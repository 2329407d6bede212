import { useCallback, useEffect, useState } from "react";
import { Link, useSearchParams } from "react-router-dom";
import { api, ApiError } from "../api/client";
import { DATASET_TYPES, type Dataset } from "../api/types";
import { DatasetUpload } from "../components/DatasetUpload";
import { ConfirmDialog, ErrorBanner, Spinner } from "../components/ui";
import { useI18n, type Translate } from "../i18n";
import { formatBytes, formatDateTime } from "../lib/format";

/** A failed delete as the user should read it: 409 means a queued or running task still uses the dataset. */
export function deleteErrorText(t: Translate, err: unknown): string {
  if (err instanceof ApiError && err.status === 409) return t("datasets.inUse", { message: err.message });
  return err instanceof Error ? err.message : String(err);
}

export function DatasetsPage() {
  const { t } = useI18n();
  const [params, setParams] = useSearchParams();
  const type = params.get("type") ?? "";
  const [datasets, setDatasets] = useState<Dataset[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [toDelete, setToDelete] = useState<Dataset | null>(null);
  const [deleting, setDeleting] = useState(false);

  const load = useCallback(async () => {
    try {
      const reply = await api.datasets(type || undefined);
      setDatasets(reply.datasets ?? []);
      setError(null);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
      setDatasets((prev) => prev ?? []);
    }
  }, [type]);

  useEffect(() => {
    void load();
  }, [load]);

  const onDelete = async () => {
    if (!toDelete) return;
    setDeleting(true);
    try {
      await api.deleteDataset(toDelete.id);
      setNotice(t("datasets.deleted", { name: toDelete.name }));
      await load();
    } catch (err) {
      setError(deleteErrorText(t, err));
    } finally {
      setDeleting(false);
      setToDelete(null);
    }
  };

  const setType = (value: string) => {
    const next = new URLSearchParams(params);
    if (value) next.set("type", value);
    else next.delete("type");
    setParams(next, { replace: true });
  };

  return (
    <div className="page datasets-page">
      <header className="page-head">
        <div>
          <h1>{t("datasets.title")}</h1>
          <p className="muted">{t("datasets.subtitle")}</p>
        </div>
      </header>
      <DatasetUpload
        onUploaded={() => {
          setNotice(null);
          void load();
        }}
      />
      <div className="filters card">
        <label>
          <span>{t("datasets.filterType")}</span>
          <select value={type} onChange={(e) => setType(e.target.value)} data-testid="dataset-filter-type">
            <option value="">{t("tasks.all")}</option>
            {DATASET_TYPES.map((x) => (
              <option key={x} value={x}>
                {x}
              </option>
            ))}
          </select>
        </label>
      </div>
      <ErrorBanner message={error} onClose={() => setError(null)} />
      {notice ? <div className="banner banner-info">{notice}</div> : null}
      <div className="card table-card">
        {datasets === null ? (
          <div className="muted pad">
            <Spinner /> {t("common.loading")}
          </div>
        ) : null}
        {datasets && datasets.length === 0 ? <div className="empty pad muted">{t("datasets.empty")}</div> : null}
        {datasets && datasets.length ? (
          <div className="table-wrap">
            <table className="table datasets-table">
              <thead>
                <tr>
                  <th>{t("datasets.col.name")}</th>
                  <th>{t("datasets.col.type")}</th>
                  <th>{t("datasets.col.rows")}</th>
                  <th>{t("datasets.col.size")}</th>
                  <th>{t("datasets.col.sha256")}</th>
                  <th>{t("datasets.col.created")}</th>
                  <th>{t("datasets.col.owner")}</th>
                  <th />
                </tr>
              </thead>
              <tbody>
                {datasets.map((d) => (
                  <tr key={d.id} data-dataset-id={d.id} data-rows={d.rows}>
                    <td>
                      <Link to={`/datasets/${encodeURIComponent(d.id)}`} title={d.id}>
                        {d.name || d.id}
                      </Link>
                    </td>
                    <td>
                      <code className="type-code">{d.type}</code>
                    </td>
                    <td className="num" data-testid="dataset-rows">
                      {d.rows}
                    </td>
                    <td className="num">{formatBytes(d.size)}</td>
                    <td>
                      <code title={d.sha256}>{d.sha256.slice(0, 12)}</code>
                    </td>
                    <td className="muted small">{formatDateTime(d.created_at)}</td>
                    <td>{d.owner}</td>
                    <td>
                      <button type="button" className="link danger" onClick={() => setToDelete(d)}>
                        {t("common.delete")}
                      </button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        ) : null}
        {datasets ? (
          <div className="pager">
            <span className="muted small">{t("datasets.total", { n: datasets.length })}</span>
          </div>
        ) : null}
      </div>
      <ConfirmDialog
        open={toDelete !== null}
        title={t("datasets.deleteTitle")}
        message={t("datasets.deleteConfirm", { name: toDelete?.name ?? "" })}
        confirmLabel={t("common.delete")}
        danger
        busy={deleting}
        onConfirm={() => void onDelete()}
        onCancel={() => setToDelete(null)}
      />
    </div>
  );
}
