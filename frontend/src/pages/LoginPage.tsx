import { useState, type FormEvent } from "react";
import { Navigate, useLocation, useNavigate } from "react-router-dom";
import { ApiError } from "../api/client";
import { useAuth } from "../auth/AuthContext";
import { LangSwitch } from "../components/Layout";
import { Spinner } from "../components/ui";
import { useI18n } from "../i18n";

export function LoginPage() {
  const { t } = useI18n();
  const { token, login } = useAuth();
  const navigate = useNavigate();
  const location = useLocation();
  const state = (location.state ?? {}) as { from?: string; expired?: boolean };
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  if (token && !busy) return <Navigate to={state.from && state.from !== "/login" ? state.from : "/finetune"} replace />;

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (!username.trim() || !password) {
      setError(t("login.missing"));
      return;
    }
    setBusy(true);
    setError(null);
    try {
      await login(username.trim(), password);
      navigate(state.from && state.from !== "/login" ? state.from : "/finetune", { replace: true });
    } catch (err) {
      if (err instanceof ApiError && (err.status === 401 || err.status === 403)) setError(t("login.wrong"));
      else if (err instanceof ApiError && err.status === 0) setError(t("login.network"));
      else setError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <div className="login-page">
      <div className="login-lang">
        <LangSwitch />
      </div>
      <form className="login-card" onSubmit={submit} noValidate>
        <div className="login-brand">
          <img src="/favicon.svg" alt="" width={40} height={40} />
          <div>
            <h1>BugAgaric</h1>
            <div className="muted">{t("login.subtitle")}</div>
          </div>
        </div>
        {state.expired ? <div className="banner banner-info">{t("login.expired")}</div> : null}
        <label className="form-field">
          <span className="field-label">{t("login.username")}</span>
          <input
            id="login-username"
            name="username"
            autoComplete="username"
            value={username}
            onChange={(e) => setUsername(e.target.value)}
            autoFocus
          />
        </label>
        <label className="form-field">
          <span className="field-label">{t("login.password")}</span>
          <input
            id="login-password"
            name="password"
            type="password"
            autoComplete="current-password"
            value={password}
            onChange={(e) => setPassword(e.target.value)}
          />
        </label>
        {error ? (
          <div className="field-error login-error" role="alert" data-testid="login-error">
            {error}
          </div>
        ) : null}
        <button type="submit" className="btn btn-primary btn-block" disabled={busy} id="login-submit">
          {busy ? <Spinner /> : null}
          {t("login.submit")}
        </button>
      </form>
    </div>
  );
}
