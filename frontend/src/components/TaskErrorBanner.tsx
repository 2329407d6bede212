import { useI18n } from "../i18n";
import type { Task } from "../api/types";

/** Why a task failed: the message once, in plain sight; the traceback (if the trainer left one) folded behind
 * "details", for whoever wants to dig. */
export function TaskErrorBanner({ task }: { task: Pick<Task, "error" | "error_reason" | "error_details"> }) {
  const { t } = useI18n();
  if (!task.error) return null;
  return (
    <div className="banner banner-error task-error" data-testid="task-error" role="alert">
      <div>
        {task.error_reason ? <strong>{task.error_reason}: </strong> : null}
        <span className="pre" data-testid="task-error-message">
          {task.error}
        </span>
      </div>
      {task.error_details ? (
        <details className="task-error-details" data-testid="task-error-details">
          <summary>{t("monitor.errorDetails")}</summary>
          <pre>{task.error_details}</pre>
        </details>
      ) : null}
    </div>
  );
}
