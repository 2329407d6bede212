import { NavLink, Outlet, useNavigate } from "react-router-dom";
import { useAuth } from "../auth/AuthContext";
import { useI18n } from "../i18n";

export function LangSwitch() {
  const { lang, setLang, t } = useI18n();
  return (
    <div className="lang-switch" role="group" aria-label={t("lang.label")}>
      <button
        type="button"
        className={lang === "zh" ? "active" : ""}
        aria-pressed={lang === "zh"}
        data-lang="zh"
        onClick={() => setLang("zh")}
      >
        中文
      </button>
      <button
        type="button"
        className={lang === "en" ? "active" : ""}
        aria-pressed={lang === "en"}
        data-lang="en"
        onClick={() => setLang("en")}
      >
        EN
      </button>
    </div>
  );
}

export function Layout() {
  const { t } = useI18n();
  const { user, logout } = useAuth();
  const navigate = useNavigate();
  return (
    <div className="app-shell">
      <aside className="sidebar">
        <div className="sidebar-inner">
          <div className="brand">
            <img src="/favicon.svg" alt="" width={28} height={28} />
            <div>
              <div className="brand-name">BugAgaric</div>
              <div className="brand-sub">{t("app.subtitle")}</div>
            </div>
          </div>
          <nav className="nav">
            <NavLink to="/finetune" className={({ isActive }) => `nav-item${isActive ? " active" : ""}`}>
              <span className="nav-icon" aria-hidden>
                ⚙
              </span>
              {t("nav.finetune")}
            </NavLink>
            <NavLink to="/tasks" className={({ isActive }) => `nav-item${isActive ? " active" : ""}`}>
              <span className="nav-icon" aria-hidden>
                ☰
              </span>
              {t("nav.tasks")}
            </NavLink>
            <NavLink to="/datasets" className={({ isActive }) => `nav-item${isActive ? " active" : ""}`}>
              <span className="nav-icon" aria-hidden>
                ⛁
              </span>
              {t("nav.datasets")}
            </NavLink>
            <NavLink to="/cluster" className={({ isActive }) => `nav-item${isActive ? " active" : ""}`}>
              <span className="nav-icon" aria-hidden>
                ▦
              </span>
              {t("nav.cluster")}
            </NavLink>
            <NavLink to="/settings" className={({ isActive }) => `nav-item${isActive ? " active" : ""}`}>
              <span className="nav-icon" aria-hidden>
                ✦
              </span>
              {t("nav.settings")}
            </NavLink>
          </nav>
          <div className="sidebar-foot">
            <LangSwitch />
            <div className="user-box">
              <span className="user-name" title={user?.role ?? ""} data-testid="current-user">
                {user?.username ?? t("auth.unknownUser")}
              </span>
              <button
                type="button"
                className="link"
                onClick={async () => {
                  await logout();
                  navigate("/login", { replace: true });
                }}
              >
                {t("auth.logout")}
              </button>
            </div>
          </div>
        </div>
      </aside>
      <main className="content">
        <Outlet />
      </main>
    </div>
  );
}
