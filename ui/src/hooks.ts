// Small hooks shared by the pages: loading with an error, and refreshing
// while the page is visible.

import { useEffect, useRef, useState } from "preact/hooks";

/** Calls `fn` now and every `ms` while the tab is visible (and at once when
 * it becomes visible again); stops when the component goes away. A call
 * still in flight (a slow server) is not overlapped by the next. */
export function useInterval(fn: () => void | Promise<void>, ms: number, deps: unknown[]): void {
  const saved = useRef(fn);
  saved.current = fn;
  useEffect(() => {
    let busy = false;
    const tick = () => {
      if (busy || document.visibilityState !== "visible") return;
      const result = saved.current();
      if (result instanceof Promise) {
        busy = true;
        void result.finally(() => (busy = false));
      }
    };
    tick();
    const timer = window.setInterval(tick, ms);
    document.addEventListener("visibilitychange", tick);
    return () => {
      window.clearInterval(timer);
      document.removeEventListener("visibilitychange", tick);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [ms, ...deps]);
}

/** Whether the tab is visible. Pages close their streams while it is not:
 * a browser opens only six connections to a server over HTTP/1.1, and a few
 * background tabs holding streams would stall every other request. */
export function useVisible(): boolean {
  const [visible, setVisible] = useState(document.visibilityState === "visible");
  useEffect(() => {
    const update = () => setVisible(document.visibilityState === "visible");
    document.addEventListener("visibilitychange", update);
    return () => document.removeEventListener("visibilitychange", update);
  }, []);
  return visible;
}

/** The current time, re-read every second: for durations that are still running. */
export function useNow(active: boolean): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    if (!active) return;
    const timer = window.setInterval(() => setNow(Date.now()), 1000);
    return () => window.clearInterval(timer);
  }, [active]);
  return now;
}

/** Sets the document title for a page. */
export function useTitle(title: string): void {
  useEffect(() => {
    document.title = title ? `${title} · ork` : "ork";
  }, [title]);
}
