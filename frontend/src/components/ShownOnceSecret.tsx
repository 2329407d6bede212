import { useRef, useState } from "react";
import { useI18n } from "../i18n";

/** A secret the server shows this once (a new API key, a webhook's signing secret): a read-only field, a copy button
 * and a warning that it will not be shown again. `testId` prefixes the test ids of its parts. */
export function ShownOnceSecret({ title, warning, secret, label, testId, onDone }: {
  title: string;
  warning: string;
  secret: string;
  label: string;
  testId: string;
  onDone: () => void;
}) {
  const { t } = useI18n();
  const field = useRef<HTMLInputElement>(null);
  const [copied, setCopied] = useState<boolean | null>(null);

  const copy = async () => {
    try {
      await navigator.clipboard.writeText(secret);
      setCopied(true);
    } catch {
      // No clipboard access (a page served over plain HTTP to another host): select it for Ctrl+C instead.
      field.current?.select();
      setCopied(false);
    }
  };

  return (
    <div className={`banner banner-warn ${testId}-reveal`} role="status" data-testid={`${testId}-reveal`}>
      <div className="api-key-reveal-body">
        <strong>{title}</strong>
        <span>{warning}</span>
        <div className="api-key-reveal-row">
          <input
            ref={field}
            type="text"
            readOnly
            value={secret}
            onFocus={(e) => e.currentTarget.select()}
            aria-label={label}
            data-testid={`${testId}-secret`}
          />
          <button type="button" className="btn" onClick={() => void copy()} data-testid={`${testId}-copy`}>
            {copied ? t("settings.keys.copied") : t("settings.keys.copy")}
          </button>
          <button type="button" className="btn btn-primary" onClick={onDone} data-testid={`${testId}-done`}>
            {t("settings.keys.done")}
          </button>
        </div>
        {copied === false ? <span className="small">{t("settings.keys.copyManually")}</span> : null}
      </div>
    </div>
  );
}
