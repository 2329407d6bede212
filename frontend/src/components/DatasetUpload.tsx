import { useEffect, useRef, useState } from "react";
import { DATASET_TYPES, type Dataset } from "../api/types";
import { uploadDataset, type UploadProgress } from "../api/upload";
import { useI18n } from "../i18n";
import { formatBytes } from "../lib/format";
import { ProgressBar, Spinner } from "./ui";
import { UploadErrorReport } from "./UploadErrorReport";

/** Upload form: type, file, a progress bar of the bytes sent, and the server's report when it refuses the file. */
export function DatasetUpload({ onUploaded }: { onUploaded: (dataset: Dataset) => void }) {
  const { t } = useI18n();
  const [type, setType] = useState<string>(DATASET_TYPES[0]);
  const [file, setFile] = useState<File | null>(null);
  const [progress, setProgress] = useState<UploadProgress | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [missingFile, setMissingFile] = useState(false);
  const [done, setDone] = useState<Dataset | null>(null);
  const inFlight = useRef<AbortController | null>(null);
  const fileInput = useRef<HTMLInputElement>(null);

  // Leaving the page cancels an upload still in flight.
  useEffect(() => () => inFlight.current?.abort(), []);

  const onSubmit = async () => {
    setDone(null);
    setError(null);
    if (!file) {
      setMissingFile(true);
      return;
    }
    const controller = new AbortController();
    inFlight.current = controller;
    setProgress({ sent: 0, total: file.size });
    try {
      const dataset = await uploadDataset(type, file, { onProgress: setProgress, signal: controller.signal });
      setDone(dataset);
      setFile(null);
      if (fileInput.current) fileInput.current.value = "";
      onUploaded(dataset);
    } catch (err) {
      if ((err as Error)?.name !== "AbortError") setError(err);
    } finally {
      inFlight.current = null;
      setProgress(null);
    }
  };

  const uploading = progress !== null;
  const total = progress?.total || file?.size || 0;
  const percent = progress && total ? (progress.sent / total) * 100 : 0;
  const allSent = !!progress && total > 0 && progress.sent >= total;

  return (
    <section className="card upload-card" data-testid="dataset-upload">
      <h2>{t("datasets.upload")}</h2>
      <form
        className="upload-form"
        onSubmit={(e) => {
          e.preventDefault();
          void onSubmit();
        }}
        noValidate
      >
        <label className="form-field">
          <span className="field-title">{t("datasets.type")}</span>
          <select value={type} onChange={(e) => setType(e.target.value)} disabled={uploading} data-testid="upload-type">
            {DATASET_TYPES.map((x) => (
              <option key={x} value={x}>
                {x}
              </option>
            ))}
          </select>
        </label>
        <label className="form-field">
          <span className="field-title">{t("datasets.file")}</span>
          <input
            ref={fileInput}
            type="file"
            accept=".jsonl,.json,.txt,application/jsonl,application/json,text/plain"
            disabled={uploading}
            data-testid="upload-file"
            onChange={(e) => {
              setFile(e.target.files?.[0] ?? null);
              setMissingFile(false);
              setError(null);
              setDone(null);
            }}
          />
          {missingFile ? (
            <span className="field-error" role="alert">
              {t("datasets.chooseFile")}
            </span>
          ) : null}
        </label>
        <div className="upload-actions">
          <button type="submit" className="btn btn-primary" disabled={uploading} data-testid="upload-submit">
            {uploading ? <Spinner /> : null}
            {uploading ? t("datasets.uploading") : t("datasets.uploadButton")}
          </button>
          {uploading ? (
            <button type="button" className="btn" onClick={() => inFlight.current?.abort()}>
              {t("datasets.cancelUpload")}
            </button>
          ) : null}
        </div>
      </form>
      {uploading ? (
        <div className="upload-progress" data-testid="upload-progress">
          <ProgressBar percent={percent} />
          <div className="muted small">
            {allSent
              ? t("datasets.checking")
              : t("datasets.sent", { sent: formatBytes(progress.sent), total: formatBytes(total) })}
          </div>
        </div>
      ) : null}
      {error ? <UploadErrorReport error={error} /> : null}
      {done ? (
        <div className="banner banner-info" data-testid="upload-done">
          {t("datasets.uploaded", { name: done.name, rows: done.rows })}
        </div>
      ) : null}
    </section>
  );
}
