// Small presentational pieces used on every page. Everything here renders
// text through Preact (which escapes it): no markup is ever built from data.

import type { ComponentChildren } from "preact";
import { ApiError } from "../api";
import { formatDuration, prettyJson } from "../model";

const LOCAL = new Intl.DateTimeFormat(undefined, {
  year: "numeric",
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});

const CLOCK = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  fractionalSecondDigits: 3,
});

/** A timestamp in the viewer's time zone; the UTC time on hover. `compact`
 * shows only the time of day (log lines). */
export function Time({ value, compact }: { value?: string | undefined; compact?: boolean }) {
  if (!value) return <span class="muted">–</span>;
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return <span>{value}</span>;
  return (
    <time
      dateTime={date.toISOString()}
      title={`${date
        .toISOString()
        .replace("T", " ")
        .replace(/\.\d+Z$/, "Z")} UTC`}
    >
      {(compact ? CLOCK : LOCAL).format(date)}
    </time>
  );
}

export function Duration({ ms }: { ms?: number | undefined }) {
  return ms === undefined ? <span class="muted">–</span> : <span>{formatDuration(ms)}</span>;
}

/** A status word with its colour (and a shape, so colour is not the only cue). */
export function Status({ status }: { status?: string | undefined }) {
  const s = status || "pending";
  return (
    <span class={`status status-${s}`}>
      <span class="dot" aria-hidden="true" />
      {s}
    </span>
  );
}

/** An API error as the page shows it. */
export function ErrorNote({ error }: { error: unknown }) {
  if (!error) return null;
  const text =
    error instanceof ApiError
      ? `${error.message}${error.code && error.code !== "UNKNOWN" ? ` (${error.code})` : ""}`
      : String(error);
  return (
    <p class="error-note" role="alert">
      {text}
    </p>
  );
}

/** A JSON value (task input, output) as text in a scrollable block. */
export function JsonBlock({ value, label }: { value: unknown; label: string }) {
  if (value === undefined) return <p class="muted">none</p>;
  return (
    <pre class="block" tabIndex={0} aria-label={label}>
      {prettyJson(value)}
    </pre>
  );
}

/** Text a task wrote (an error, a traceback) in a scrollable block. */
export function TextBlock({ text, label }: { text: string; label: string }) {
  return (
    <pre class="block" tabIndex={0} aria-label={label}>
      {text}
    </pre>
  );
}

/** A note that the connected server is too old for a feature. */
export function NeedsNewerServer({ children }: { children: ComponentChildren }) {
  return (
    <p class="note" role="note">
      <strong>Needs a newer server.</strong> {children}
    </p>
  );
}
