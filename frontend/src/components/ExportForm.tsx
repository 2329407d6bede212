import { useState } from "react";
import { useNavigate } from "react-router-dom";
import { api } from "../api/client";
import { EXPORT_DTYPES, type ExportDtype } from "../api/types";
import { useI18n } from "../i18n";
import { ErrorBanner, Spinner } from "./ui";

/** Export a finished task's model (merge_lora, dtype): the server queues an export task; we go to its monitor. */
export function ExportForm({ taskId }: { taskId: string }) {
  const { t } = useI18n();
  const navigate = useNavigate();
  const [mergeLora, setMergeLora] = useState(true);
  const [dtype, setDtype] = useState<ExportDtype>("auto");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  const onExport = async () => {
    setBusy(true);
    setError(null);
    try {
      const created = await api.exportTask(taskId, { merge_lora: mergeLora, dtype });
      navigate(`/tasks/${encodeURIComponent(created.id)}`);
    } catch (err) {
      setError(t("export.failed", { message: (err as Error).message ?? String(err) }));
      setBusy(false);
    }
  };

  return (
    <div className="export-form" data-testid="export-form">
      <h4>{t("export.title")}</h4>
      <p className="muted small">{t("export.hint")}</p>
      <div className="export-row">
        <label className="check">
          <input
            type="checkbox"
            checked={mergeLora}
            onChange={(e) => setMergeLora(e.target.checked)}
            data-testid="export-merge-lora"
          />
          {t("export.mergeLora")}
        </label>
        <label className="check">
          {t("export.dtype")}
          <select value={dtype} onChange={(e) => setDtype(e.target.value as ExportDtype)} data-testid="export-dtype">
            {EXPORT_DTYPES.map((d) => (
              <option key={d} value={d}>
                {d}
              </option>
            ))}
          </select>
        </label>
        <button
          type="button"
          className="btn"
          onClick={() => void onExport()}
          disabled={busy}
          data-testid="export-start"
        >
          {busy ? <Spinner /> : null}
          {busy ? t("export.starting") : t("export.start")}
        </button>
      </div>
      <ErrorBanner message={error} onClose={() => setError(null)} />
    </div>
  );
}
