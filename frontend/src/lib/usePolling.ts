import { useEffect } from "react";

/** Calls `load` now and then every `intervalMs` after the previous call settles, skipping ticks while the tab is
 * hidden (a backgrounded console should not load the control plane). Stops on unmount or when `load` changes. */
export function usePolling(load: () => Promise<unknown>, intervalMs: number): void {
  useEffect(() => {
    let timer: number | undefined;
    let stopped = false;
    const tick = async () => {
      if (document.visibilityState !== "hidden") await load();
      if (!stopped) timer = window.setTimeout(tick, intervalMs);
    };
    void tick();
    return () => {
      stopped = true;
      window.clearTimeout(timer);
    };
  }, [load, intervalMs]);
}
