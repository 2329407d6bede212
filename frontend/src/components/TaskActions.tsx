// The monitor's task actions besides stop/delete: resume from a picked checkpoint (the latest by default), clone as
// a new task, continue a succeeded task's training, and a queued task's priority and queue position.

import { useEffect, useState } from "react";
import { useNavigate } from "react-router-dom";
import { api } from "../api/client";
import type { Task } from "../api/types";
import { useI18n } from "../i18n";
import { canClone, canContinue, prefillRoute, type PrefillKind } from "../lib/prefill";
import { Spinner } from "./ui";

interface Props {
  task: Task;
  /** The task as an action's reply left it. */
  onTask: (task: Task) => void;
  onError: (message: string) => void;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function canResume(task: Task): boolean {
  return (task.status === "stopped" || task.status === "failed") && !!task.checkpoints?.length;
}

/** "Resume" with a checkpoint picker; the latest checkpoint is preselected. */
function ResumeControl({ task, onTask, onError }: Props) {
  const { t } = useI18n();
  const checkpoints = task.checkpoints ?? [];
  const latest = checkpoints[checkpoints.length - 1]?.path ?? "";
  const [picked, setPicked] = useState(latest);
  const [busy, setBusy] = useState(false);
  useEffect(() => setPicked(latest), [latest]);

  const resume = async () => {
    setBusy(true);
    try {
      onTask(await api.resume(task.id, picked === latest ? undefined : picked));
    } catch (err) {
      onError(message(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <span className="action-group" data-testid="resume-control">
      <select
        value={picked}
        onChange={(e) => setPicked(e.target.value)}
        aria-label={t("actions.checkpoint")}
        data-testid="resume-checkpoint"
      >
        {checkpoints
          .slice()
          .reverse()
          .map((c) => (
            <option key={c.path} value={c.path}>
              {t(c.path === latest ? "actions.checkpointLatest" : "actions.checkpointStep", { step: c.step })}
            </option>
          ))}
      </select>
      <button type="button" className="btn btn-primary" onClick={() => void resume()} disabled={busy} data-testid="resume-task">
        {busy ? <Spinner /> : null}
        {t("actions.resume")}
      </button>
    </span>
  );
}

/** A queued task's place in the queue and its priority (higher runs first). */
function PriorityControl({ task, onTask, onError }: Props) {
  const { t } = useI18n();
  const [value, setValue] = useState(String(task.priority ?? 0));
  const [busy, setBusy] = useState(false);
  // A new priority from the server (this control's change, another tab's) replaces the input. Adjusted while
  // rendering, not in an effect: an effect runs after the first paint and would wipe what was typed in between.
  const [shownPriority, setShownPriority] = useState(task.priority);
  if (task.priority !== shownPriority) {
    setShownPriority(task.priority);
    setValue(String(task.priority ?? 0));
  }
  const parsed = Number(value);
  // The range is the server's (the config's priority field): its 400 names it.
  const valid = value.trim() !== "" && Number.isInteger(parsed);

  const apply = async () => {
    if (!valid) return;
    setBusy(true);
    try {
      onTask(await api.setPriority(task.id, parsed));
    } catch (err) {
      onError(message(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <form
      className="action-group"
      onSubmit={(e) => {
        e.preventDefault();
        void apply();
      }}
      data-testid="priority-control"
    >
      <label className="small">
        {t("actions.priority")}{" "}
        <input
          type="number"
          className="priority-input"
          step={1}
          value={value}
          onChange={(e) => setValue(e.target.value)}
          aria-invalid={!valid}
          title={t("actions.priorityHint")}
          data-testid="priority-input"
        />
      </label>
      <button
        type="submit"
        className="btn btn-small"
        disabled={busy || !valid || parsed === (task.priority ?? 0)}
        data-testid="priority-apply"
      >
        {t("actions.priorityApply")}
      </button>
    </form>
  );
}

export function QueuePosition({ task }: { task: Task }) {
  const { t } = useI18n();
  if (task.status !== "queued" || !task.queue_position) return null;
  return (
    <span className="chip queue-chip" data-testid="queue-position" data-position={task.queue_position}>
      {t("actions.queuePosition", { n: task.queue_position })}
    </span>
  );
}

/** Opens the 模型微调 form prefilled from this task ("clone" or "continue"). */
export function PrefillButton({ task, kind, small }: { task: Task; kind: PrefillKind; small?: boolean }) {
  const { t } = useI18n();
  const navigate = useNavigate();
  const route = prefillRoute(task, kind);
  return (
    <button
      type="button"
      className={small ? "link" : "btn"}
      onClick={() => navigate(route.to, { state: route.state })}
      data-testid={kind === "clone" ? "clone-task" : "continue-task"}
      title={t(kind === "clone" ? "actions.cloneHint" : "actions.continueHint")}
    >
      {t(kind === "clone" ? "actions.clone" : "actions.continue")}
    </button>
  );
}

export function TaskActions(props: Props) {
  const { task } = props;
  return (
    <>
      <QueuePosition task={task} />
      {task.status === "queued" ? <PriorityControl {...props} /> : null}
      {canResume(task) ? <ResumeControl {...props} /> : null}
      {canContinue(task) ? <PrefillButton task={task} kind="continue" /> : null}
      {canClone(task) ? <PrefillButton task={task} kind="clone" /> : null}
    </>
  );
}
