import { useNavigate } from "react-router-dom";
import { useI18n } from "../i18n";
import { MAX_COMPARE, MIN_COMPARE, compareUrl, selectionState } from "../lib/compare";

/** The task list's selection: how many are picked, why "Compare" is off, and the way to the compare page. */
export function CompareBar({ selected, onClear }: { selected: string[]; onClear: () => void }) {
  const { t } = useI18n();
  const navigate = useNavigate();
  const state = selectionState(selected.length);
  const hint =
    state === "tooFew"
      ? t("compare.hintTooFew", { min: MIN_COMPARE, max: MAX_COMPARE })
      : state === "tooMany"
        ? t("compare.hintTooMany", { n: selected.length, max: MAX_COMPARE })
        : "";
  return (
    <div className="compare-bar card" data-testid="compare-bar" data-selected={selected.length}>
      <span className="small">{t("compare.selected", { n: selected.length })}</span>
      <button
        type="button"
        className="btn btn-primary btn-small"
        disabled={state !== "ok"}
        onClick={() => navigate(compareUrl(selected))}
        data-testid="compare-open"
      >
        {t("compare.open")}
      </button>
      {hint ? (
        <span className="muted small" data-testid="compare-hint">
          {hint}
        </span>
      ) : null}
      <span className="spacer" />
      {selected.length ? (
        <button type="button" className="link small" onClick={onClear}>
          {t("compare.clear")}
        </button>
      ) : null}
    </div>
  );
}
