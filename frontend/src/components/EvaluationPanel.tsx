import { useMemo } from "react";
import { FINISHED_STATUSES, type MetricPoint, type Task } from "../api/types";
import { useI18n, type MessageKey } from "../i18n";
import {
  PREDICT_PREFIX,
  beforeAfterRows,
  isAnswerScore,
  isRetrievalMetric,
  type BeforeAfterRow,
} from "../lib/evaluation";
import { formatNumber } from "../lib/format";
import { PredictionsPanel } from "./PredictionsPanel";

const ANSWER_SCORES = ["exact_match", "token_f1", "rouge_l"];

function signed(delta: number): string {
  return `${delta > 0 ? "+" : ""}${formatNumber(Number(delta.toFixed(4)))}`;
}

export function BeforeAfterTable({ rows, label, testId }: {
  rows: BeforeAfterRow[];
  label: (key: string) => string;
  testId: string;
}) {
  const { t } = useI18n();
  return (
    <table className="table compact before-after" data-testid={testId}>
      <thead>
        <tr>
          <th>{t("eval.col.metric")}</th>
          <th className="num">{t("eval.col.beforeScore")}</th>
          <th className="num">{t("eval.col.afterScore")}</th>
          <th className="num">{t("eval.col.delta")}</th>
        </tr>
      </thead>
      <tbody>
        {rows.map((r) => (
          <tr key={r.key} data-metric={r.key}>
            <td>{label(r.key)}</td>
            <td className="num" data-phase="before">{formatNumber(r.before)}</td>
            <td className="num" data-phase="after">{formatNumber(r.after)}</td>
            <td className={`num ${r.delta === null ? "" : r.delta > 0 ? "delta-up" : r.delta < 0 ? "delta-down" : ""}`}>
              {r.delta === null ? "—" : signed(r.delta)}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/**
 * The held-out evaluation of a task, before -> after training: the retrieval metrics of an embedding task, the answer
 * scores of an LM task's predictions and (once it finished) the predictions beside their references. Renders nothing
 * for a task that reported neither.
 */
export function EvaluationPanel({ task, points }: { task: Task; points: MetricPoint[] }) {
  const { t } = useI18n();
  const retrieval = useMemo(() => beforeAfterRows(points, "eval", isRetrievalMetric), [points]);
  const answers = useMemo(() => beforeAfterRows(points, "predict", isAnswerScore), [points]);
  const predictedRows = useMemo(() => {
    const point = [...points].reverse().find((p) => p.event === "predict");
    return typeof point?.[`${PREDICT_PREFIX}rows`] === "number" ? (point[`${PREDICT_PREFIX}rows`] as number) : null;
  }, [points]);
  if (!retrieval.length && !answers.length) return null;
  const finished = FINISHED_STATUSES.includes(task.status);
  const answerLabel = (key: string) => {
    const name = key.slice(PREDICT_PREFIX.length);
    return ANSWER_SCORES.includes(name) ? t(`eval.score.${name}` as MessageKey) : key;
  };
  return (
    <section className="card evaluation-panel" data-testid="evaluation">
      <div className="card-head">
        <h2>{t("eval.title")}</h2>
      </div>
      {retrieval.length ? (
        <>
          <h3>{t("eval.retrieval")}</h3>
          <BeforeAfterTable rows={retrieval} label={(k) => k} testId="eval-retrieval" />
        </>
      ) : null}
      {answers.length ? (
        <>
          <h3>{t("eval.answers")}</h3>
          {predictedRows !== null ? <p className="muted small">{t("eval.rows", { n: predictedRows })}</p> : null}
          <BeforeAfterTable rows={answers} label={answerLabel} testId="eval-answers" />
        </>
      ) : null}
      {finished && answers.some((r) => r.after !== null) ? <PredictionsPanel task={task} /> : null}
    </section>
  );
}
