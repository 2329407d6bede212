// A task's attempts (each run: where, when, how it ended, what it resumed from) and its checkpoints, as GetTask
// returns them.

import type { Task } from "../api/types";
import { useI18n } from "../i18n";
import { formatDateTime } from "../lib/format";
import { StatusBadge } from "./ui";

function baseName(path: string): string {
  return path.split("/").filter(Boolean).pop() ?? path;
}

export function TaskHistory({ task }: { task: Task }) {
  const { t } = useI18n();
  const attempts = task.attempts ?? [];
  const checkpoints = task.checkpoints ?? [];
  if (!attempts.length && !checkpoints.length) return null;
  return (
    <section className="card" data-testid="task-history">
      <h2>{t("history.title")}</h2>
      {attempts.length ? (
        <div className="table-wrap">
          <table className="table compact" data-testid="attempts">
            <thead>
              <tr>
                <th>#</th>
                <th>{t("history.agent")}</th>
                <th>{t("history.started")}</th>
                <th>{t("history.ended")}</th>
                <th>{t("history.outcome")}</th>
                <th>{t("history.resumedFrom")}</th>
              </tr>
            </thead>
            <tbody>
              {attempts.map((a) => (
                <tr key={a.number} data-attempt={a.number}>
                  <td className="num">{a.number}</td>
                  <td className="mono small">
                    {a.agent_id ?? "—"}
                    {a.devices.length ? ` [${a.devices.join(",")}]` : ""}
                  </td>
                  <td className="small">{formatDateTime(a.started_at)}</td>
                  <td className="small">{a.ended_at ? formatDateTime(a.ended_at) : "—"}</td>
                  <td>
                    {a.status ? <StatusBadge status={a.status} /> : <span className="muted">{t("history.running")}</span>}
                    {a.reason ? <code className="small"> {a.reason}</code> : null}
                  </td>
                  <td className="mono small" title={a.resumed_from ?? undefined}>
                    {a.resumed_from ? baseName(a.resumed_from) : "—"}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
      {checkpoints.length ? (
        <>
          <h3>{t("history.checkpoints", { n: checkpoints.length })}</h3>
          <ul className="checkpoint-list" data-testid="checkpoints">
            {checkpoints.map((c) => (
              <li key={c.path} data-step={c.step}>
                <span className="mono">{t("actions.checkpointStep", { step: c.step })}</span>{" "}
                <span className="muted small">
                  {t("history.ofAttempt", { n: c.attempt })} · {formatDateTime(c.time)}
                </span>{" "}
                <code className="small muted" title={c.path}>
                  {c.path}
                </code>
              </li>
            ))}
          </ul>
        </>
      ) : null}
    </section>
  );
}
