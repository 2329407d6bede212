import { useMemo, useState } from "react";
import { Link, useSearchParams } from "react-router-dom";
import { OverlayChart, runColor } from "../components/OverlayChart";
import { ErrorBanner, Spinner, StatusBadge } from "../components/ui";
import { useI18n } from "../i18n";
import {
  diffConfigs,
  finalKeys,
  finalMetrics,
  overlayKeys,
  overlaySeries,
  parseCompareIds,
  runDuration,
  selectionState,
  type DiffCell,
} from "../lib/compare";
import { useCompareRuns, type LoadedRun } from "../lib/compareData";
import { formatDuration, formatNumber, shortId } from "../lib/format";
import { defaultChartKeys } from "../lib/metrics";

function RunHead({ run, index }: { run: LoadedRun; index: number }) {
  return (
    <th className="compare-run-head" data-run-id={run.id}>
      <span className="run-swatch" style={{ background: runColor(index) }} aria-hidden />
      <Link to={`/tasks/${encodeURIComponent(run.id)}`} className="mono" title={run.id}>
        {shortId(run.id)}
      </Link>
    </th>
  );
}

function cellText(cell: DiffCell): string {
  if (cell.missing) return "";
  return typeof cell.value === "string" ? cell.value : JSON.stringify(cell.value);
}

function Charts({ runs, labels }: { runs: LoadedRun[]; labels: string[] }) {
  const { t } = useI18n();
  const keys = useMemo(() => overlayKeys(runs), [runs]);
  const [chosen, setChosen] = useState<string[] | null>(null);
  const defaults = defaultChartKeys(keys);
  const shown = chosen ?? (defaults.length ? defaults : keys.slice(0, 2));
  const overlays = useMemo(() => shown.map((k) => overlaySeries(runs, k)), [runs, shown.join("|")]); // eslint-disable-line react-hooks/exhaustive-deps
  const toggle = (key: string) => setChosen(shown.includes(key) ? shown.filter((k) => k !== key) : [...shown, key]);

  return (
    <section className="card" data-testid="compare-charts">
      <div className="card-head">
        <h2>{t("compare.charts")}</h2>
      </div>
      {keys.length === 0 ? (
        <p className="muted">{t("compare.noMetrics")}</p>
      ) : (
        <>
          <div className="metric-picker" role="group" aria-label={t("compare.pickMetrics")}>
            {keys.map((k) => (
              <label key={k} className={`chip${shown.includes(k) ? " on" : ""}`}>
                <input type="checkbox" checked={shown.includes(k)} onChange={() => toggle(k)} data-metric-key={k} />
                {k}
              </label>
            ))}
          </div>
          <div className="charts">
            {overlays.map((o) => (
              <div className="chart-box" key={o.key}>
                <div className="chart-title">{o.key}</div>
                <OverlayChart overlay={o} labels={labels} xLabel={o.xLabel === "step" ? "step" : "#"} />
              </div>
            ))}
          </div>
        </>
      )}
    </section>
  );
}

function Finals({ runs }: { runs: LoadedRun[] }) {
  const { t } = useI18n();
  const finals = useMemo(() => runs.map((r) => finalMetrics(r.points)), [runs]);
  const keys = finalKeys(finals);
  return (
    <section className="card" data-testid="compare-finals">
      <h2>{t("compare.finals")}</h2>
      <div className="table-wrap">
        <table className="table compact compare-table">
          <thead>
            <tr>
              <th />
              {runs.map((r, i) => (
                <RunHead key={r.id} run={r} index={i} />
              ))}
            </tr>
          </thead>
          <tbody>
            <tr>
              <th>{t("compare.row.status")}</th>
              {runs.map((r) => (
                <td key={r.id}>
                  <StatusBadge status={r.task.status} />
                </td>
              ))}
            </tr>
            <tr>
              <th>{t("compare.row.type")}</th>
              {runs.map((r) => (
                <td key={r.id}>
                  <code className="type-code">{r.task.type}</code>
                </td>
              ))}
            </tr>
            <tr>
              <th>{t("compare.row.duration")}</th>
              {runs.map((r) => (
                <td key={r.id} className="num">
                  {formatDuration(runDuration(r.task))}
                </td>
              ))}
            </tr>
            {keys.map((k) => (
              <tr key={k} data-metric={k}>
                <th className="mono">{k}</th>
                {finals.map((f, i) => (
                  <td key={runs[i].id} className="num">
                    {formatNumber(f[k])}
                  </td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}

function ConfigDiff({ runs }: { runs: LoadedRun[] }) {
  const { t } = useI18n();
  const rows = useMemo(() => diffConfigs(runs.map((r) => r.task.config ?? {})), [runs]);
  const [onlyDiff, setOnlyDiff] = useState(false);
  const differing = rows.filter((r) => r.differs).length;
  const shown = onlyDiff ? rows.filter((r) => r.differs) : rows;
  return (
    <section className="card" data-testid="compare-config">
      <div className="card-head">
        <h2>{t("compare.config")}</h2>
        <span className="muted small" data-testid="diff-count">
          {differing ? t("compare.diffCount", { n: differing, total: rows.length }) : t("compare.noDiff")}
        </span>
        <span className="spacer" />
        <label className="check">
          <input type="checkbox" checked={onlyDiff} onChange={(e) => setOnlyDiff(e.target.checked)} />
          {t("compare.onlyDiff")}
        </label>
      </div>
      <div className="table-wrap">
        <table className="table compact compare-table config-diff">
          <thead>
            <tr>
              <th>{t("compare.col.key")}</th>
              {runs.map((r, i) => (
                <RunHead key={r.id} run={r} index={i} />
              ))}
            </tr>
          </thead>
          <tbody>
            {shown.map((row) => (
              <tr key={row.key} data-key={row.key} data-differs={row.differs} className={row.differs ? "diff-row" : ""}>
                <th className="mono">{row.key}</th>
                {row.cells.map((cell, i) => (
                  <td key={runs[i].id} className={cell.missing ? "muted diff-missing" : "mono"}>
                    {cell.missing ? t("compare.missing") : cellText(cell)}
                  </td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}

export function ComparePage() {
  const { t } = useI18n();
  const [params] = useSearchParams();
  const ids = useMemo(() => parseCompareIds(params.get("ids")), [params]);
  const countOk = selectionState(ids.length) === "ok";
  const { runs, errors } = useCompareRuns(countOk ? ids : []);
  const labels = (runs ?? []).map((r) => `${shortId(r.id)} · ${r.task.type}`);

  return (
    <div className="page compare-page" data-runs={runs?.length ?? 0}>
      <Link to="/tasks" className="back">
        ← {t("compare.back")}
      </Link>
      <header className="page-head">
        <div>
          <h1>{t("compare.title")}</h1>
          <p className="muted">{t("compare.subtitle")}</p>
        </div>
      </header>
      {!countOk ? <ErrorBanner message={t("compare.badCount", { n: ids.length })} /> : null}
      {errors.map((e) => (
        <div key={e.id} data-testid="compare-error" data-task-id={e.id}>
          <ErrorBanner
            message={
              e.notFound ? t("compare.notFound", { id: e.id }) : t("compare.loadFailed", { id: e.id, message: e.message })
            }
          />
        </div>
      ))}
      {countOk && runs === null ? (
        <div className="card muted">
          <Spinner /> {t("common.loading")}
        </div>
      ) : null}
      {countOk && runs !== null && runs.length < 2 ? <ErrorBanner message={t("compare.notEnough")} /> : null}
      {runs && runs.length >= 2 ? (
        <>
          <Charts runs={runs} labels={labels} />
          <Finals runs={runs} />
          <ConfigDiff runs={runs} />
        </>
      ) : null}
    </div>
  );
}
