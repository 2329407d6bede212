import { useCallback, useRef, useState } from "react";
import { Link } from "react-router-dom";
import { api } from "../api/client";
import type { AgentInfo, SystemHealth, Task } from "../api/types";
import { NodesTag } from "../components/TaskNodes";
import { ErrorBanner, Spinner, StatusBadge } from "../components/ui";
import { useI18n, type Translate } from "../i18n";
import {
  DEVICE_HOLDING_STATUSES,
  deviceAsk,
  deviceReading,
  deviceRows,
  heartbeatAge,
  hiddenQueued,
  queueOrder,
} from "../lib/cluster";
import { formatBytes, formatDateTime, formatDuration, shortId } from "../lib/format";
import { usePolling } from "../lib/usePolling";

const POLL_MS = 3000;
// The control plane's list limit: a queue longer than this shows its first 500.
const LIST_LIMIT = 500;

interface Snapshot {
  health: SystemHealth;
  tasks: Task[];
}

/** The agents and their devices, what runs on each, and the queue. A normal user lists only their own tasks, so
 * others' show as "occupied" devices and a count of queued tasks, never with ids or owners. */
export function ClusterPage() {
  const { t } = useI18n();
  const [data, setData] = useState<Snapshot | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [now, setNow] = useState(() => Date.now());
  const requestId = useRef(0);

  const load = useCallback(async () => {
    const id = ++requestId.current;
    try {
      const [health, ...lists] = await Promise.all([
        api.health(),
        ...["queued", ...DEVICE_HOLDING_STATUSES].map((status) => api.tasks({ status, limit: LIST_LIMIT })),
      ]);
      if (id !== requestId.current) return;
      setData({ health, tasks: lists.flatMap((list) => list.tasks) });
      setNow(Date.now());
      setError(null);
    } catch (err) {
      if (id === requestId.current) setError(err instanceof Error ? err.message : String(err));
    }
  }, []);

  // Live: poll while the tab is visible.
  usePolling(load, POLL_MS);

  const queue = data ? queueOrder(data.tasks) : [];
  const othersQueued = data ? hiddenQueued(data.health.control_plane?.queued_tasks ?? 0, queue.length) : 0;

  return (
    <div className="page cluster-page">
      <header className="page-head">
        <div>
          <h1>{t("cluster.title")}</h1>
          <p className="muted">{t("cluster.subtitle")}</p>
        </div>
        <span className="muted small live-dot">{t("tasks.live")}</span>
      </header>
      <ErrorBanner message={error} />
      {data === null && !error ? (
        <div className="muted pad">
          <Spinner /> {t("common.loading")}
        </div>
      ) : null}
      {data && data.health.agents.length === 0 ? (
        <div className="card empty muted" data-testid="no-agents">
          {t("cluster.noAgents")}
        </div>
      ) : null}
      {data?.health.agents.map((agent) => (
        <AgentCard key={agent.agent_id} agent={agent} tasks={data.tasks} now={now} t={t} />
      ))}
      {data ? (
        <section className="card table-card cluster-queue" data-testid="cluster-queue">
          <div className="card-head pad">
            <h2>{t("cluster.queue")}</h2>
            <span className="muted small">{t("cluster.queueCount", { n: queue.length + othersQueued })}</span>
          </div>
          {queue.length === 0 && othersQueued === 0 ? (
            <div className="empty pad muted">{t("cluster.queueEmpty")}</div>
          ) : null}
          {queue.length ? (
            <div className="table-wrap">
              <table className="table">
                <thead>
                  <tr>
                    <th>{t("cluster.col.position")}</th>
                    <th>{t("tasks.col.id")}</th>
                    <th>{t("tasks.col.type")}</th>
                    <th>{t("cluster.col.owner")}</th>
                    <th>{t("cluster.col.priority")}</th>
                    <th>{t("cluster.col.asks")}</th>
                    <th>{t("tasks.col.created")}</th>
                  </tr>
                </thead>
                <tbody>
                  {queue.map((task) => (
                    <tr key={task.id} data-task-id={task.id}>
                      <td data-testid="queue-position">
                        {task.queue_position ?? <span className="muted">{t("cluster.checking")}</span>}
                      </td>
                      <td>
                        <TaskLink task={task} />
                      </td>
                      <td>{task.type}</td>
                      <td>{task.owner ?? "—"}</td>
                      <td>{task.priority ?? 0}</td>
                      <td>{askText(task, t)}</td>
                      <td className="muted small">{formatDateTime(task.created_at)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          ) : null}
          {othersQueued > 0 ? (
            <div className="pad muted small" data-testid="queue-hidden">
              {t("cluster.queueHidden", { n: othersQueued })}
            </div>
          ) : null}
        </section>
      ) : null}
    </div>
  );
}

function AgentCard({ agent, tasks, now, t }: { agent: AgentInfo; tasks: Task[]; now: number; t: Translate }) {
  const age = heartbeatAge(agent.last_heartbeat, now);
  return (
    <section className="card table-card cluster-agent" data-agent-id={agent.agent_id} data-alive={agent.alive}>
      <div className="card-head pad">
        <div>
          <h2 className="mono">{agent.agent_id}</h2>
          <div className="muted small">
            {agent.address}
            {agent.hostname ? ` · ${agent.hostname}` : ""}
          </div>
        </div>
        <span className={`badge ${agent.alive ? "badge-succeeded" : "badge-failed"}`} data-testid="agent-status">
          {agent.alive ? t("cluster.alive") : t("cluster.lost")}
        </span>
      </div>
      <dl className="cluster-facts pad">
        <div>
          <dt>{t("cluster.heartbeat")}</dt>
          <dd title={formatDateTime(agent.last_heartbeat)}>
            {age === null ? "—" : t("cluster.ago", { time: formatDuration(age) })}
          </dd>
        </div>
        <div>
          <dt>{t("cluster.slots")}</dt>
          <dd data-testid="agent-slots">{t("cluster.slotsFree", { free: agent.free_slots, total: agent.slots })}</dd>
        </div>
        <div>
          <dt>{t("cluster.warmPool")}</dt>
          <dd>{agent.warm_pool_memory_bytes > 0 ? formatBytes(agent.warm_pool_memory_bytes) : "—"}</dd>
        </div>
      </dl>
      <div className="table-wrap">
        <table className="table cluster-devices">
          <thead>
            <tr>
              <th>{t("cluster.col.device")}</th>
              <th>{t("cluster.col.name")}</th>
              <th>{t("cluster.col.utilization")}</th>
              <th>{t("cluster.col.memory")}</th>
              <th>{t("cluster.col.running")}</th>
            </tr>
          </thead>
          <tbody>
            {deviceRows(agent, tasks).map(({ device, tasks: on, occupied }) => {
              const reading = deviceReading(device);
              const state = on.length ? "task" : occupied ? "occupied" : "free";
              return (
                <tr key={device.index} data-device-index={device.index} data-state={state}>
                  <td className="mono">
                    {device.kind} {device.index}
                  </td>
                  <td>{device.name ?? "—"}</td>
                  <td>{reading ? `${Math.round(reading.utilizationPercent)}%` : "—"}</td>
                  <td>
                    {reading ? `${formatBytes(reading.memoryUsedBytes)} / ${formatBytes(reading.memoryTotalBytes)}` : "—"}
                  </td>
                  <td>
                    {on.map((task) => (
                      <div key={task.id} className="cluster-task" data-task-id={task.id}>
                        <TaskLink task={task} /> <span>{task.type}</span> <NodesTag task={task} />{" "}
                        {task.owner ? <span className="muted">{task.owner}</span> : null} <StatusBadge status={task.status} />
                      </div>
                    ))}
                    {state === "occupied" ? <span className="muted">{t("cluster.occupied")}</span> : null}
                    {state === "free" ? <span className="muted">{t("cluster.free")}</span> : null}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
    </section>
  );
}

function TaskLink({ task }: { task: Task }) {
  return (
    <Link to={`/tasks/${encodeURIComponent(task.id)}`} className="mono" title={task.id}>
      {shortId(task.id)}
    </Link>
  );
}

function askText(task: Task, t: Translate): string {
  const ask = deviceAsk(task.config ?? {}, task);
  if ("pinned" in ask) return t("cluster.askPinned", { devices: ask.pinned.join(", ") });
  if ("nodes" in ask) return t("cluster.askGang", { nodes: ask.nodes, gpus: ask.perNode });
  return ask.splittable ? t("cluster.askSplit", { n: ask.count }) : t("cluster.askCount", { n: ask.count });
}
