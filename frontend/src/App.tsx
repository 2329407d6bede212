import { useEffect, type ReactElement } from "react";
import { Navigate, Route, Routes, useLocation, useNavigate } from "react-router-dom";
import { setUnauthorizedHandler } from "./api/client";
import { useAuth } from "./auth/AuthContext";
import { Layout } from "./components/Layout";
import { ClusterPage } from "./pages/ClusterPage";
import { ComparePage } from "./pages/ComparePage";
import { DatasetDetailPage } from "./pages/DatasetDetailPage";
import { DatasetsPage } from "./pages/DatasetsPage";
import { FinetunePage } from "./pages/FinetunePage";
import { LoginPage } from "./pages/LoginPage";
import { SettingsPage } from "./pages/SettingsPage";
import { TaskMonitorPage } from "./pages/TaskMonitorPage";
import { TasksPage } from "./pages/TasksPage";
import { useI18n } from "./i18n";

function RequireAuth({ children }: { children: ReactElement }) {
  const { token } = useAuth();
  const location = useLocation();
  if (!token) {
    return <Navigate to="/login" replace state={{ from: location.pathname + location.search }} />;
  }
  return children;
}

function NotFound() {
  const { t } = useI18n();
  return (
    <div className="page">
      <h1>404</h1>
      <p className="muted">{t("common.notFound")}</p>
    </div>
  );
}

export function App() {
  const { clear } = useAuth();
  const navigate = useNavigate();
  const location = useLocation();

  // Any 401 from the API: the session is gone -> login page, coming back here afterwards.
  useEffect(() => {
    setUnauthorizedHandler(() => {
      clear();
      const from = window.location.pathname + window.location.search;
      if (!from.startsWith("/login")) navigate("/login", { replace: true, state: { from, expired: true } });
    });
    return () => setUnauthorizedHandler(null);
  }, [clear, navigate]);

  useEffect(() => {
    window.scrollTo?.(0, 0);
  }, [location.pathname]);

  return (
    <Routes>
      <Route path="/login" element={<LoginPage />} />
      <Route
        element={
          <RequireAuth>
            <Layout />
          </RequireAuth>
        }
      >
        <Route index element={<Navigate to="/finetune" replace />} />
        <Route path="/finetune" element={<FinetunePage />} />
        <Route path="/tasks" element={<TasksPage />} />
        <Route path="/tasks/:taskId" element={<TaskMonitorPage />} />
        <Route path="/datasets" element={<DatasetsPage />} />
        <Route path="/datasets/:datasetId" element={<DatasetDetailPage />} />
        <Route path="/cluster" element={<ClusterPage />} />
        <Route path="/compare" element={<ComparePage />} />
        <Route path="/settings" element={<SettingsPage />} />
        <Route path="*" element={<NotFound />} />
      </Route>
    </Routes>
  );
}
