import { useEffect, useState } from "react";
import { artifactPath } from "../api/client";
import { fetchBlob } from "../api/download";
import type { Task } from "../api/types";
import { useI18n } from "../i18n";
import { PREDICTIONS_FILE, parsePredictions, type AnswerScores, type PredictionLine } from "../lib/evaluation";
import { formatNumber } from "../lib/format";
import { ErrorBanner, Spinner } from "./ui";

/** Rows shown before "show all": the file holds up to predict_max_rows (200 by default). */
const FIRST_ROWS = 50;

function Scores({ scores }: { scores: AnswerScores }) {
  const { t } = useI18n();
  return (
    <span className="pred-scores muted small">
      {t("eval.score.token_f1")} {formatNumber(scores.token_f1)} · {t("eval.score.rouge_l")} {formatNumber(scores.rouge_l)}
      {scores.exact_match === 1 ? ` · ${t("eval.exact")}` : ""}
    </span>
  );
}

/**
 * The held-out rows' answers beside their references, read from the task's predictions.jsonl through the artifact
 * download route (with the bearer token). The base model's answer is shown too when the task scored it
 * (eval_before).
 */
export function PredictionsPanel({ task }: { task: Task }) {
  const { t } = useI18n();
  const [rows, setRows] = useState<PredictionLine[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [showAll, setShowAll] = useState(false);

  useEffect(() => {
    const controller = new AbortController();
    setRows(null);
    setError(null);
    fetchBlob(artifactPath(task.id, PREDICTIONS_FILE), PREDICTIONS_FILE, { signal: controller.signal })
      .then(({ blob }) => blob.text())
      .then((text) => setRows(parsePredictions(text)))
      .catch((err) => {
        if ((err as Error)?.name !== "AbortError") setError((err as Error).message ?? String(err));
      });
    return () => controller.abort();
  }, [task.id]);

  const hasBefore = !!rows?.some((r) => r.before);
  const shown = rows ? (showAll ? rows : rows.slice(0, FIRST_ROWS)) : [];
  return (
    <div className="predictions" data-testid="predictions">
      <h3>{t("eval.predictions")}</h3>
      <ErrorBanner message={error ? t("eval.loadError", { message: error }) : null} />
      {!rows && !error ? (
        <div className="muted">
          <Spinner /> {t("common.loading")}
        </div>
      ) : null}
      {rows ? (
        <div className="table-wrap">
          <table className="table compact predictions-table">
            <thead>
              <tr>
                <th>{t("eval.col.line")}</th>
                <th>{t("eval.col.question")}</th>
                <th>{t("eval.col.reference")}</th>
                {hasBefore ? <th>{t("eval.col.before")}</th> : null}
                <th>{t("eval.col.prediction")}</th>
              </tr>
            </thead>
            <tbody>
              {shown.map((r, i) => (
                <tr key={i} data-prediction-row={i}>
                  <td className="num muted">{r.line ?? "—"}</td>
                  <td>{r.question}</td>
                  <td>{r.reference}</td>
                  {hasBefore ? (
                    <td data-testid="prediction-before">
                      {r.before ? (
                        <>
                          <div className="pred-text">{r.before.prediction || "—"}</div>
                          <Scores scores={r.before.scores} />
                        </>
                      ) : (
                        "—"
                      )}
                    </td>
                  ) : null}
                  <td data-testid="prediction-after">
                    <div className="pred-text">{r.prediction || "—"}</div>
                    <Scores scores={r.scores} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
      {rows && rows.length > FIRST_ROWS ? (
        <button type="button" className="link" onClick={() => setShowAll((v) => !v)}>
          {showAll ? t("eval.showFirst", { n: FIRST_ROWS }) : t("eval.showAll", { n: rows.length })}
        </button>
      ) : null}
    </div>
  );
}
