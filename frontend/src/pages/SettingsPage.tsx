import { ApiKeysPanel } from "../components/ApiKeysPanel";
import { WebhooksPanel } from "../components/WebhooksPanel";
import { useI18n } from "../i18n";

/** The user's own settings: a stack of independent sections (API keys; more panels join below). */
export function SettingsPage() {
  const { t } = useI18n();
  return (
    <div className="page settings-page">
      <header className="page-head">
        <div>
          <h1>{t("settings.title")}</h1>
          <p className="muted">{t("settings.subtitle")}</p>
        </div>
      </header>
      <ApiKeysPanel />
      <WebhooksPanel />
    </div>
  );
}
