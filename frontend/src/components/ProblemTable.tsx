import { useI18n } from "../i18n";

/** One problem the server found in a dataset: the line it is on and the field it names, where it says them. */
export interface ProblemRow {
  line: number | null;
  field: string | null;
  message: string;
}

/**
 * The line / field / message table of an upload the server refused and of a dry run's report. Each row carries its
 * line number as `data-line`; a line or field the server did not name shows as "—".
 */
export function ProblemTable({ problems }: { problems: ProblemRow[] }) {
  const { t } = useI18n();
  return (
    <div className="table-wrap">
      <table className="table compact">
        <thead>
          <tr>
            <th>{t("report.line")}</th>
            <th>{t("report.field")}</th>
            <th>{t("report.message")}</th>
          </tr>
        </thead>
        <tbody>
          {problems.map((p, i) => (
            <tr key={`${p.line}-${i}`} data-line={p.line || undefined}>
              <td className="num">{p.line || "—"}</td>
              <td>
                <code>{p.field || "—"}</code>
              </td>
              <td>{p.message}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
