// A multi-node ("gang") task's shape and where each of its nodes runs: the monitor shows these instead of the one
// agent of a one-node task, and the task list tags the row with its node count.

import { ACTIVE_STATUSES, type Task } from "../api/types";
import { useI18n, type Translate } from "../i18n";
import { StatusBadge } from "./ui";

type NodePlacement = Task["node_placements"][number];

/** More than one host trains it together. */
export function isGang(task: Pick<Task, "nodes">): boolean {
  return (task.nodes ?? 1) > 1;
}

/** Devices per node: the task's own count, else what its first node was given (a gang always has at least one). */
function gpusPerNode(task: Task): number {
  if (task.gpus_per_node > 0) return task.gpus_per_node;
  const placed = task.node_placements?.[0]?.devices.length ?? 0;
  return Math.max(1, placed);
}

/** "2 × 1 GPU(s)". */
export function gangShape(t: Translate, task: Task): string {
  return t("nodes.shape", { nodes: task.nodes, gpus: gpusPerNode(task) });
}

/** A node's outcome, or while it runs the task's own (active) status: a null status means "still running". */
function NodeStatus({ node, task }: { node: NodePlacement; task: Task }) {
  if (node.status) return <StatusBadge status={node.status} />;
  if (ACTIVE_STATUSES.includes(task.status) && task.status !== "queued") return <StatusBadge status={task.status} />;
  return <span className="muted">—</span>;
}

/** The monitor's nodes card for a gang (nothing for a one-node task). */
export function TaskNodes({ task }: { task: Task }) {
  const { t } = useI18n();
  if (!isGang(task)) return null;
  const placements = [...(task.node_placements ?? [])].sort((a, b) => a.node - b.node);
  return (
    <section className="card" data-testid="task-nodes" data-nodes={task.nodes}>
      <h2>{t("nodes.heading", { shape: gangShape(t, task) })}</h2>
      {placements.length ? (
        <div className="table-wrap">
          <table className="table compact" data-testid="node-placements">
            <thead>
              <tr>
                <th>{t("nodes.col.node")}</th>
                <th>{t("nodes.col.agent")}</th>
                <th>{t("nodes.col.devices")}</th>
                <th>{t("nodes.col.status")}</th>
              </tr>
            </thead>
            <tbody>
              {placements.map((n) => (
                <tr key={n.node} data-node={n.node} data-agent-id={n.agent_id}>
                  <td className="num">
                    {n.node}{" "}
                    {n.rank0 ? (
                      <span className="badge badge-rank0" title={t("nodes.rank0Help")} data-testid="rank0">
                        {t("nodes.rank0")}
                      </span>
                    ) : null}
                  </td>
                  <td className="mono small">{n.agent_id || "—"}</td>
                  <td className="mono small" data-testid="node-devices">
                    {n.devices.length ? n.devices.join(", ") : "—"}
                  </td>
                  <td>
                    <NodeStatus node={n} task={task} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <p className="muted small">{t("nodes.note")}</p>
        </div>
      ) : (
        <p className="muted small" data-testid="nodes-unplaced">
          {t("nodes.unplaced", { nodes: task.nodes, gpus: gpusPerNode(task) })}
        </p>
      )}
    </section>
  );
}

/** The task list's "2 nodes" next to a gang's type (nothing for a one-node task). */
export function NodesTag({ task }: { task: Task }) {
  const { t } = useI18n();
  if (!isGang(task)) return null;
  return (
    <span className="muted small nodes-tag" data-testid="nodes-tag" title={gangShape(t, task)}>
      {t("tasks.nodes", { n: task.nodes })}
    </span>
  );
}
