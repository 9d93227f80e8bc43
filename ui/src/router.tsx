// A small path router over the History API: every page has a real URL under
// /ui/ (deep links and the back button work; the server answers any /ui/
// path with the app), and links are real <a> elements, so they work with
// the keyboard, middle-click and "copy link".

import type { AnchorHTMLAttributes, ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";

export const BASE = "/ui";

export interface Location {
  /** The path below /ui, starting with "/". */
  path: string;
  query: URLSearchParams;
}

function current(): Location {
  const path = window.location.pathname.startsWith(BASE) ? window.location.pathname.slice(BASE.length) || "/" : "/";
  return { path, query: new URLSearchParams(window.location.search) };
}

const listeners = new Set<() => void>();
window.addEventListener("popstate", () => listeners.forEach((l) => l()));

/** The app URL of a path below /ui, with optional query parameters. */
export function href(path: string, query?: Record<string, string | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query ?? {})) if (v) q.set(k, v);
  const s = q.toString();
  return `${BASE}${path}${s ? `?${s}` : ""}`;
}

/** The page of a run. */
export function runHref(id: string | undefined): string {
  return href(`/runs/${encodeURIComponent(id ?? "")}`);
}

/** The page of a workflow. */
export function workflowHref(name: string | undefined): string {
  return href(`/workflows/${encodeURIComponent(name ?? "")}`);
}

/** Goes to an app URL; `replace` keeps the history entry (filters). */
export function navigate(url: string, replace = false): void {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  listeners.forEach((l) => l());
}

export function useLocation(): Location {
  const [location, setLocation] = useState(current);
  useEffect(() => {
    const update = () => setLocation(current());
    listeners.add(update);
    return () => void listeners.delete(update);
  }, []);
  return location;
}

type AnchorProps = AnchorHTMLAttributes<HTMLAnchorElement> & { href: string; children?: ComponentChildren };

/** An <a> that navigates inside the app on a plain click. */
export function Link(props: AnchorProps) {
  const { href: to, onClick, ...rest } = props;
  return (
    <a
      {...rest}
      href={to}
      onClick={(e) => {
        if (onClick) (onClick as (e: MouseEvent) => void)(e);
        if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
        e.preventDefault();
        navigate(to);
      }}
    />
  );
}
