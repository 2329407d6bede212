import { useCallback, useEffect, useRef, useState } from "react";
import { Link, useSearchParams } from "react-router-dom";
import { api } from "../api/client";
import { TASK_STATUSES, isSavedTemplate, type TaskList } from "../api/types";
import { PrefillButton, QueuePosition } from "../components/TaskActions";
import { CompareBar } from "../components/CompareBar";
import { NodesTag } from "../components/TaskNodes";
import { canClone } from "../lib/prefill";
import { ErrorBanner, ProgressBar, Spinner, StatusBadge } from "../components/ui";
import { useI18n, type MessageKey } from "../i18n";
import { formatDateTime, formatDuration, formatNumber, shortId } from "../lib/format";
import { usePolling } from "../lib/usePolling";

const PAGE_SIZE = 20;
const POLL_MS = 2000;

export function TasksPage() {
  const { t } = useI18n();
  const [params, setParams] = useSearchParams();
  const status = params.get("status") ?? "";
  const type = params.get("type") ?? "";
  const page = Math.max(1, Number(params.get("page") ?? "1") || 1);
  const [data, setData] = useState<TaskList | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [types, setTypes] = useState<string[]>([]);
  const requestId = useRef(0);
  // Picked for comparison, in the order picked (the compare page's columns); kept across pages and filters.
  const [selected, setSelected] = useState<string[]>([]);
  const toggleSelected = (id: string) =>
    setSelected((s) => (s.includes(id) ? s.filter((x) => x !== id) : [...s, id]));

  useEffect(() => {
    api
      .templates()
      .then((r) => setTypes((r.templates ?? []).filter((e) => !isSavedTemplate(e)).map((e) => e.type)))
      .catch(() => undefined);
  }, []);

  const load = useCallback(async () => {
    const id = ++requestId.current;
    try {
      const reply = await api.tasks({
        status: status || undefined,
        type: type || undefined,
        limit: PAGE_SIZE,
        offset: (page - 1) * PAGE_SIZE,
      });
      if (id === requestId.current) {
        setData(reply);
        setError(null);
      }
    } catch (err) {
      if (id === requestId.current) setError(err instanceof Error ? err.message : String(err));
    }
  }, [status, type, page]);

  // Live: poll every 2 s while the tab is visible.
  usePolling(load, POLL_MS);

  const setFilter = (key: string, value: string) => {
    const next = new URLSearchParams(params);
    if (value) next.set(key, value);
    else next.delete(key);
    next.delete("page");
    setParams(next, { replace: true });
  };
  const setPage = (p: number) => {
    const next = new URLSearchParams(params);
    if (p > 1) next.set("page", String(p));
    else next.delete("page");
    setParams(next);
  };

  const total = data?.total ?? 0;
  const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
  const typeOptions = Array.from(new Set([...types, ...(type ? [type] : [])]));

  return (
    <div className="page tasks-page">
      <header className="page-head">
        <div>
          <h1>{t("tasks.title")}</h1>
          <p className="muted">{t("tasks.subtitle")}</p>
        </div>
        <Link to="/finetune" className="btn btn-primary">
          + {t("tasks.new")}
        </Link>
      </header>
      <div className="filters card">
        <label>
          <span>{t("tasks.filterType")}</span>
          <select value={type} onChange={(e) => setFilter("type", e.target.value)} data-testid="filter-type">
            <option value="">{t("tasks.all")}</option>
            {typeOptions.map((x) => (
              <option key={x} value={x}>
                {x}
              </option>
            ))}
          </select>
        </label>
        <label>
          <span>{t("tasks.filterStatus")}</span>
          <select value={status} onChange={(e) => setFilter("status", e.target.value)} data-testid="filter-status">
            <option value="">{t("tasks.all")}</option>
            {TASK_STATUSES.map((x) => (
              <option key={x} value={x}>
                {t(`status.${x}` as MessageKey)}
              </option>
            ))}
          </select>
        </label>
        <span className="spacer" />
        <span className="muted small live-dot">{t("tasks.live")}</span>
      </div>
      <ErrorBanner message={error} />
      <CompareBar selected={selected} onClear={() => setSelected([])} />
      <div className="card table-card">
        {data === null && !error ? (
          <div className="muted pad">
            <Spinner /> {t("common.loading")}
          </div>
        ) : null}
        {data && data.tasks.length === 0 ? <div className="empty pad muted">{t("tasks.empty")}</div> : null}
        {data && data.tasks.length ? (
          <div className="table-wrap">
            <table className="table tasks-table">
              <thead>
                <tr>
                  <th className="col-select" />
                  <th>{t("tasks.col.id")}</th>
                  <th>{t("tasks.col.type")}</th>
                  <th>{t("tasks.col.status")}</th>
                  <th className="col-progress">{t("tasks.col.progress")}</th>
                  <th>{t("tasks.col.eta")}</th>
                  <th>{t("tasks.col.loss")}</th>
                  <th>{t("tasks.col.created")}</th>
                  <th>{t("tasks.col.actions")}</th>
                </tr>
              </thead>
              <tbody>
                {data.tasks.map((task) => (
                  <tr key={task.id} data-task-id={task.id} data-status={task.status}>
                    <td className="col-select">
                      <input
                        type="checkbox"
                        checked={selected.includes(task.id)}
                        onChange={() => toggleSelected(task.id)}
                        aria-label={t("compare.select", { id: task.id })}
                        data-testid="compare-select"
                      />
                    </td>
                    <td>
                      <Link to={`/tasks/${encodeURIComponent(task.id)}`} className="mono" title={task.id}>
                        {shortId(task.id)}
                      </Link>
                    </td>
                    <td>
                      <code className="type-code">{task.type}</code> <NodesTag task={task} />
                    </td>
                    <td>
                      <StatusBadge status={task.status} /> <QueuePosition task={task} />
                    </td>
                    <td className="col-progress">
                      <ProgressBar percent={task.progress?.percent ?? 0} />
                      {task.progress?.total_steps ? (
                        <div className="muted small">
                          {task.progress.step}/{task.progress.total_steps}
                        </div>
                      ) : null}
                    </td>
                    <td className="num">
                      {task.status === "running" ? formatDuration(task.progress?.eta_seconds) : "—"}
                    </td>
                    <td className="num">{formatNumber(task.progress?.loss)}</td>
                    <td className="muted small">{formatDateTime(task.created_at)}</td>
                    <td>
                      {canClone(task) ? <PrefillButton task={task} kind="clone" small /> : null}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        ) : null}
        <div className="pager">
          <span className="muted small">{t("tasks.total", { n: total })}</span>
          <span className="spacer" />
          <button type="button" className="btn btn-small" disabled={page <= 1} onClick={() => setPage(page - 1)}>
            {t("tasks.prev")}
          </button>
          <span className="small">{t("tasks.page", { page, pages })}</span>
          <button type="button" className="btn btn-small" disabled={page >= pages} onClick={() => setPage(page + 1)}>
            {t("tasks.next")}
          </button>
        </div>
      </div>
    </div>
  );
}
