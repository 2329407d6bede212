import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from "react";
import { api, ApiError, getToken, setToken } from "../api/client";
import type { User } from "../api/types";

const USER_KEY = "bugagaric.user";

interface AuthValue {
  token: string | null;
  user: User | null;
  login: (username: string, password: string) => Promise<void>;
  logout: () => Promise<void>;
  /** Forget the session locally (after a 401). */
  clear: () => void;
}

const AuthContext = createContext<AuthValue | null>(null);

function storedUser(): User | null {
  try {
    const raw = localStorage.getItem(USER_KEY);
    return raw ? (JSON.parse(raw) as User) : null;
  } catch {
    return null;
  }
}

export function AuthProvider({ children }: { children: ReactNode }) {
  const [token, setTokenState] = useState<string | null>(() => getToken());
  const [user, setUser] = useState<User | null>(() => storedUser());

  const clear = useCallback(() => {
    setToken(null);
    localStorage.removeItem(USER_KEY);
    setTokenState(null);
    setUser(null);
  }, []);

  const login = useCallback(async (username: string, password: string) => {
    const reply = await api.login(username, password);
    setToken(reply.token);
    localStorage.setItem(USER_KEY, JSON.stringify(reply.user));
    setTokenState(reply.token);
    setUser(reply.user);
  }, []);

  const logout = useCallback(async () => {
    try {
      await api.logout();
    } catch {
      /* the session is dropped locally either way */
    }
    clear();
  }, [clear]);

  // Refresh who we are (the role may have changed); a 401 is handled by the client's unauthorized handler.
  useEffect(() => {
    if (!token) return;
    let cancelled = false;
    api
      .me()
      .then((me) => {
        if (!cancelled && me?.username) {
          setUser(me);
          localStorage.setItem(USER_KEY, JSON.stringify(me));
        }
      })
      .catch((err: unknown) => {
        if (!(err instanceof ApiError)) return;
      });
    return () => {
      cancelled = true;
    };
  }, [token]);

  const value = useMemo(() => ({ token, user, login, logout, clear }), [token, user, login, logout, clear]);
  return <AuthContext.Provider value={value}>{children}</AuthContext.Provider>;
}

/** The signed-in user's name, or null (also outside an AuthProvider: for what only keys data by the user). */
export function useUsername(): string | null {
  return useContext(AuthContext)?.user?.username ?? null;
}

export function useAuth(): AuthValue {
  const value = useContext(AuthContext);
  if (!value) throw new Error("useAuth outside AuthProvider");
  return value;
}
