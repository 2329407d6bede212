import { useEffect, useState } from "react";
import { api, artifactPath, modelArchivePath } from "../api/client";
import { downloadWithToken } from "../api/download";
import type { Artifact, ArtifactList, Task } from "../api/types";
import { useI18n, type MessageKey } from "../i18n";
import { formatBytes } from "../lib/format";
import { ExportForm } from "./ExportForm";
import { ErrorBanner, Spinner } from "./ui";

// The order the groups are shown in; kinds the server adds later go under "other".
const KIND_ORDER = ["model", "adapter", "summary", "predictions", "tracking", "log", "checkpoint"] as const;

export function groupArtifacts(artifacts: Artifact[]): Array<{ kind: string; items: Artifact[] }> {
  const groups = new Map<string, Artifact[]>();
  for (const a of artifacts) {
    const kind = (KIND_ORDER as readonly string[]).includes(a.kind) ? a.kind : "other";
    groups.set(kind, [...(groups.get(kind) ?? []), a]);
  }
  const order = [...KIND_ORDER, "other"];
  return order
    .filter((k) => groups.has(k))
    .map((kind) => ({ kind, items: [...groups.get(kind)!].sort((a, b) => a.path.localeCompare(b.path)) }));
}

function basename(path: string): string {
  return path.split("/").filter(Boolean).pop() ?? path;
}

/**
 * The monitor's artifacts panel: the task's files grouped by kind with download links, the whole model as a .tar,
 * and (for a succeeded training task) the export button. Downloads send the bearer token, so they are fetched and
 * saved from a Blob rather than linked.
 */
export function ArtifactsPanel({ task }: { task: Task }) {
  const { t } = useI18n();
  const [list, setList] = useState<ArtifactList | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [downloadError, setDownloadError] = useState<string | null>(null);
  // What is downloading now ("model" or an artifact path) and how many bytes have arrived.
  const [downloading, setDownloading] = useState<{ key: string; received: number } | null>(null);
  const succeeded = task.status === "succeeded";

  useEffect(() => {
    const controller = new AbortController();
    api
      .artifacts(task.id, controller.signal)
      .then((r) => {
        setList(r);
        setError(null);
      })
      .catch((err) => {
        if ((err as Error)?.name !== "AbortError") setError((err as Error).message ?? String(err));
      });
    return () => controller.abort();
    // Listed again when the status changes: a task that just succeeded has its final files (and is published).
  }, [task.id, task.status, task.published_model_sha256]);

  const download = async (key: string, path: string, fallbackName: string) => {
    setDownloadError(null);
    setDownloading({ key, received: 0 });
    try {
      await downloadWithToken(path, fallbackName, {
        onProgress: (p) => setDownloading({ key, received: p.received }),
      });
    } catch (err) {
      setDownloadError(t("artifacts.downloadError", { message: (err as Error).message ?? String(err) }));
    } finally {
      setDownloading(null);
    }
  };

  const busyLabel = (key: string) =>
    downloading?.key === key ? t("artifacts.downloading", { received: formatBytes(downloading.received) }) : null;
  const groups = list ? groupArtifacts(list.artifacts ?? []) : [];

  return (
    <section className="card artifacts-panel" data-testid="artifacts">
      <div className="card-head">
        <h2>{t("artifacts.title")}</h2>
        {list ? (
          <span className={`mode ${list.source === "published" ? "mode-live" : ""}`} data-source={list.source}>
            {list.source === "published" ? t("artifacts.sourcePublished") : t("artifacts.sourceAgent")}
          </span>
        ) : null}
      </div>
      {task.published_model_sha256 ? (
        <p className="muted small">
          {t("artifacts.published")}: <code title={task.published_model_sha256}>{task.published_model_sha256.slice(0, 16)}</code>
        </p>
      ) : null}
      <ErrorBanner message={error ? t("artifacts.loadError", { message: error }) : null} />
      <ErrorBanner message={downloadError} onClose={() => setDownloadError(null)} />
      {succeeded ? (
        <div className="artifact-actions">
          <button
            type="button"
            className="btn btn-primary"
            disabled={downloading !== null}
            onClick={() => void download("model", modelArchivePath(task.id), `${task.id}-model.tar`)}
            data-testid="download-model"
          >
            {downloading?.key === "model" ? <Spinner /> : null}
            {busyLabel("model") ?? t("artifacts.downloadModel")}
          </button>
        </div>
      ) : null}
      {!list && !error ? (
        <div className="muted">
          <Spinner /> {t("common.loading")}
        </div>
      ) : null}
      {list && groups.length === 0 ? <p className="muted">{t("artifacts.empty")}</p> : null}
      {groups.map(({ kind, items }) => {
        const rows = (
          <table className="table compact">
            <tbody>
              {items.map((a) => (
                <tr key={a.path} data-artifact={a.path} data-kind={a.kind}>
                  <td className="mono artifact-path">{a.path}</td>
                  <td className="num muted">{formatBytes(a.size)}</td>
                  <td className="artifact-link">
                    <button
                      type="button"
                      className="link"
                      disabled={downloading !== null}
                      onClick={() => void download(a.path, artifactPath(task.id, a.path), basename(a.path))}
                    >
                      {busyLabel(a.path) ?? t("artifacts.download")}
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        );
        const title = (
          <>
            {t(`artifacts.kind.${kind}` as MessageKey)}{" "}
            <span className="muted small">({t("artifacts.files", { n: items.length })})</span>
          </>
        );
        // Checkpoints can be many files: folded by default.
        return kind === "checkpoint" ? (
          <details key={kind} className="artifact-group" data-group={kind}>
            <summary>{title}</summary>
            {rows}
          </details>
        ) : (
          <div key={kind} className="artifact-group" data-group={kind}>
            <h4>{title}</h4>
            {rows}
          </div>
        );
      })}
      {succeeded && task.type !== "export" ? <ExportForm taskId={task.id} /> : null}
    </section>
  );
}
