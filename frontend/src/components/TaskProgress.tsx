import { ACTIVE_STATUSES, type Task } from "../api/types";
import { useI18n } from "../i18n";
import { formatNumber } from "../lib/format";
import { stageLabel, stagePercent } from "../lib/stages";
import { ProgressBar } from "./ui";

/**
 * The monitor's progress card: training steps, or, while a multi-stage trainer (KBAlign) annotates, clusters or
 * verifies, the stage by name with its count ("Annotating short Q&A: 12 of 40") and the bar following that count.
 */
export function TaskProgress({ task }: { task: Task }) {
  const { t } = useI18n();
  const p = task.progress;
  const inStage = !!p.stage && ACTIVE_STATUSES.includes(task.status);
  const label = p.stage ? stageLabel(p.stage) : null;
  const stageName = label ? (label.key ? t(label.key, label.params) : label.name) : "";
  return (
    <div className="card stat">
      <div className="stat-label">{t("monitor.progress")}</div>
      <ProgressBar percent={inStage ? stagePercent(p) : p.percent} />
      {inStage ? (
        <div className="small" data-testid="progress-stage" data-stage={p.stage}>
          {p.stage_total
            ? t("monitor.stageCount", { stage: stageName, done: p.stage_done ?? 0, total: p.stage_total })
            : stageName}
        </div>
      ) : null}
      <div className="muted small" data-testid="progress-steps">
        {p.total_steps
          ? t("monitor.steps", { step: p.step, total: p.total_steps })
          : task.validation?.state === "pending"
            ? t("monitor.checkingData")
            : inStage
              ? ""
              : t("monitor.noSteps")}
        {p.epoch !== null && p.epoch !== undefined ? ` · epoch ${formatNumber(p.epoch)}` : ""}
      </div>
    </div>
  );
}
