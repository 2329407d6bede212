import { useEffect, useMemo, useState } from "react";
import { Link, useNavigate, useParams } from "react-router-dom";
import { api } from "../api/client";
import { ACTIVE_STATUSES, FINISHED_STATUSES, type Task } from "../api/types";
import { ArtifactsPanel } from "../components/ArtifactsPanel";
import { TaskChat } from "../components/ChatPanel";
import { EvaluationPanel } from "../components/EvaluationPanel";
import { LogView } from "../components/LogView";
import { MetricChart } from "../components/MetricChart";
import { TaskErrorBanner } from "../components/TaskErrorBanner";
import { TaskProgress } from "../components/TaskProgress";
import { TaskActions } from "../components/TaskActions";
import { TaskHistory } from "../components/TaskHistory";
import { gangShape, isGang, TaskNodes } from "../components/TaskNodes";
import { ConfirmDialog, ErrorBanner, Spinner, StatusBadge } from "../components/ui";
import { useI18n, type MessageKey } from "../i18n";
import { formatDateTime, formatDuration, formatNumber } from "../lib/format";
import { defaultChartKeys, metricKeys, seriesFor, summaryOf } from "../lib/metrics";
import { useLogLines, useTaskLive, type StreamMode } from "../lib/streams";

function ModeTag({ mode }: { mode: StreamMode }) {
  const { t } = useI18n();
  return (
    <span className={`mode mode-${mode}`} data-mode={mode}>
      {t(`stream.${mode}` as MessageKey)}
    </span>
  );
}

function ConfigTable({ config }: { config: Record<string, unknown> }) {
  const entries = Object.entries(config ?? {});
  return (
    <dl className="kv config-kv">
      {entries.map(([k, v]) => (
        <div key={k}>
          <dt>
            <code>{k}</code>
          </dt>
          <dd className="mono">{typeof v === "string" ? v : JSON.stringify(v)}</dd>
        </div>
      ))}
    </dl>
  );
}

export function TaskMonitorPage() {
  const { taskId = "" } = useParams();
  const { t } = useI18n();
  const navigate = useNavigate();
  const { task, setTask, followTask, points, error, streamError, mode } = useTaskLive(taskId);
  const isFinished = !!task && FINISHED_STATUSES.includes(task.status);
  const { lines, mode: logMode, error: logError } = useLogLines(taskId, isFinished);
  const [confirm, setConfirm] = useState<"stop" | "delete" | null>(null);
  const [actionBusy, setActionBusy] = useState(false);
  const [actionError, setActionError] = useState<string | null>(null);
  const [chosen, setChosen] = useState<string[] | null>(null);
  const [showConfig, setShowConfig] = useState(false);

  const keys = useMemo(() => metricKeys(points), [points]);
  const shownKeys = chosen ?? defaultChartKeys(keys);
  const seriesList = useMemo(() => shownKeys.map((k) => seriesFor(points, k)), [points, shownKeys.join("|")]); // eslint-disable-line react-hooks/exhaustive-deps
  const summary = useMemo(() => summaryOf(points, task?.latest_metrics), [points, task?.latest_metrics]);

  useEffect(() => {
    document.title = task ? `${task.type} · ${task.status} — BugAgaric` : "BugAgaric";
    return () => {
      document.title = "BugAgaric";
    };
  }, [task?.type, task?.status]); // eslint-disable-line react-hooks/exhaustive-deps

  const toggleKey = (key: string) => {
    const base = chosen ?? shownKeys;
    setChosen(base.includes(key) ? base.filter((k) => k !== key) : [...base, key]);
  };

  const runAction = async () => {
    if (!confirm || !task) return;
    setActionBusy(true);
    setActionError(null);
    try {
      if (confirm === "stop") {
        const updated: Task = await api.stop(task.id);
        setTask(updated);
        setConfirm(null);
      } else {
        await api.remove(task.id);
        setConfirm(null);
        navigate("/tasks", { replace: true });
      }
    } catch (err) {
      setActionError(err instanceof Error ? err.message : String(err));
      setConfirm(null);
    } finally {
      setActionBusy(false);
    }
  };

  if (error) {
    return (
      <div className="page">
        <Link to="/tasks" className="back">
          ← {t("monitor.back")}
        </Link>
        <ErrorBanner message={error.status === 404 ? t("monitor.notFound", { id: taskId }) : error.message} />
      </div>
    );
  }
  if (!task) {
    return (
      <div className="page">
        <div className="card muted">
          <Spinner /> {t("common.loading")}
        </div>
      </div>
    );
  }

  const p = task.progress;
  const canStop = ACTIVE_STATUSES.includes(task.status) && task.status !== "stopping";
  const summaryEntries = Object.entries(summary).filter(([, v]) => v !== null && typeof v !== "object");

  return (
    <div className="page monitor-page" data-task-id={task.id} data-status={task.status}>
      <Link to="/tasks" className="back">
        ← {t("monitor.back")}
      </Link>
      <header className="page-head">
        <div>
          <h1 className="monitor-title">
            <code className="type-code big">{task.type}</code>
            <span className="mono task-id">{task.id}</span>
            <StatusBadge status={task.status} />
          </h1>
          <p className="muted small">
            {t("monitor.created")}: {formatDateTime(task.created_at)}
            {task.started_at ? ` · ${t("monitor.started")}: ${formatDateTime(task.started_at)}` : ""}
            {task.finished_at ? ` · ${t("monitor.finished")}: ${formatDateTime(task.finished_at)}` : ""}
            {isGang(task)
              ? ` · ${t("monitor.nodes")}: ${gangShape(t, task)}`
              : task.agent_id
                ? ` · ${t("monitor.agent")}: ${task.agent_id}`
                : ""}
          </p>
        </div>
        <div className="head-actions">
          <TaskActions task={task} onTask={followTask} onError={setActionError} />
          {canStop ? (
            <button type="button" className="btn btn-warn" onClick={() => setConfirm("stop")} data-testid="stop-task">
              {t("monitor.stop")}
            </button>
          ) : null}
          {isFinished ? (
            <button
              type="button"
              className="btn btn-danger"
              onClick={() => setConfirm("delete")}
              data-testid="delete-task"
            >
              {t("monitor.delete")}
            </button>
          ) : null}
        </div>
      </header>
      <ErrorBanner message={actionError} onClose={() => setActionError(null)} />
      {streamError ? <ErrorBanner message={t("monitor.streamError", { message: streamError.message })} /> : null}
      <TaskErrorBanner task={task} />

      <section className="stat-grid">
        <TaskProgress task={task} />
        <div className="card stat">
          <div className="stat-label">{t("monitor.eta")}</div>
          <div className="stat-value">{task.status === "running" ? formatDuration(p.eta_seconds) : "—"}</div>
        </div>
        <div className="card stat">
          <div className="stat-label">loss</div>
          <div className="stat-value" data-testid="latest-loss">
            {formatNumber(p.loss)}
          </div>
        </div>
        <div className="card stat">
          <div className="stat-label">learning rate</div>
          <div className="stat-value">{formatNumber(p.learning_rate)}</div>
        </div>
      </section>

      <TaskNodes task={task} />

      <section className="card">
        <div className="card-head">
          <h2>{t("monitor.charts")}</h2>
          <ModeTag mode={mode} />
        </div>
        {keys.length === 0 ? (
          <p className="muted">{t("monitor.noMetrics")}</p>
        ) : (
          <>
            <div className="metric-picker" role="group" aria-label={t("monitor.pickMetrics")}>
              {keys.map((k) => (
                <label key={k} className={`chip${shownKeys.includes(k) ? " on" : ""}`}>
                  <input
                    type="checkbox"
                    checked={shownKeys.includes(k)}
                    onChange={() => toggleKey(k)}
                    data-metric-key={k}
                  />
                  {k}
                </label>
              ))}
            </div>
            {chosen === null && shownKeys.length === 0 ? (
              <p className="muted small" data-testid="charts-waiting">
                {t("monitor.chartsWaiting")}
              </p>
            ) : null}
            <div className="charts">
              {seriesList.map((s) => (
                <div className="chart-box" key={s.key}>
                  <div className="chart-title">
                    {s.key} <span className="muted small">({s.xs.length})</span>
                  </div>
                  <MetricChart series={s} xLabel={s.xLabel === "step" ? "step" : "#"} />
                </div>
              ))}
            </div>
          </>
        )}
      </section>

      {isFinished && summaryEntries.length ? (
        <section className="card" data-testid="summary">
          <h2>{t("monitor.summary")}</h2>
          <dl className="kv summary-kv">
            {summaryEntries.map(([k, v]) => (
              <div key={k}>
                <dt>{k}</dt>
                <dd className="mono">{formatNumber(v)}</dd>
              </div>
            ))}
          </dl>
        </section>
      ) : null}

      <EvaluationPanel task={task} points={points} />

      <section className="card">
        <div className="card-head">
          <h2>{t("monitor.logs")}</h2>
        </div>
        {logError && logError.status !== 401 ? (
          <ErrorBanner message={t("monitor.streamError", { message: logError.message })} />
        ) : null}
        <LogView lines={lines} status={<ModeTag mode={logMode} />} />
      </section>

      {/* Artifacts for every finished task, not only succeeded ones: a failed or stopped run's logs and checkpoints
          are what the user needs to debug or resume it. The whole-model download and the export button appear only
          for a succeeded task (the panel hides them otherwise): only then is there a final model, published. */}
      {isFinished ? <ArtifactsPanel task={task} /> : null}

      <TaskChat task={task} />

      <section className="card">
        <div className="card-head">
          <h2>{t("monitor.output")}</h2>
        </div>
        <p>
          <code className="mono" data-testid="output-dir">
            {task.output_dir ?? (task.config?.output_dir as string | undefined) ?? "—"}
          </code>
        </p>
        <button type="button" className="link" onClick={() => setShowConfig((v) => !v)} aria-expanded={showConfig}>
          {showConfig ? t("monitor.hideConfig") : t("monitor.showConfig")}
        </button>
        {showConfig ? <ConfigTable config={task.config} /> : null}
      </section>

      <TaskHistory task={task} />

      {task.events?.length ? (
        <section className="card">
          <h2>{t("monitor.events")}</h2>
          <ol className="timeline">
            {task.events.map((e, i) => (
              <li key={i}>
                <span className="muted small">{formatDateTime(e.time)}</span>{" "}
                <StatusBadge status={e.to_status} /> <code>{e.reason}</code>
                {e.message ? <span className="muted"> — {e.message}</span> : null}
              </li>
            ))}
          </ol>
        </section>
      ) : null}

      <ConfirmDialog
        open={confirm !== null}
        title={confirm === "delete" ? t("monitor.deleteTitle") : t("monitor.stopTitle")}
        message={confirm === "delete" ? t("monitor.deleteConfirm") : t("monitor.stopConfirm")}
        confirmLabel={confirm === "delete" ? t("monitor.delete") : t("monitor.stop")}
        danger
        busy={actionBusy}
        onConfirm={() => void runAction()}
        onCancel={() => setConfirm(null)}
      />
    </div>
  );
}
