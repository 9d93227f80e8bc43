// A task's log, following it live over the logs route's Server-Sent Events
// (`?follow=true`) until the task ends. Lines are untrusted text and are
// only ever rendered as text. The pane sticks to the bottom while the reader
// is at the bottom, and stays put when they scroll up to read.

import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { ApiError, streams } from "../api";
import type { LogLine } from "../types";
import { ErrorNote, Time } from "./bits";

/** Lines kept in the page; older ones are dropped (the CLI has them all). */
const MAX_LINES = 5000;

interface Props {
  runId: string;
  task: string;
  /** Only this fan-out instance's lines, when set. */
  index?: number | undefined;
  /** Bumped by the page to reconnect (after a retry). */
  generation: number;
}

type State = "connecting" | "following" | "ended" | "failed";

export function LogPane({ runId, task, index, generation }: Props) {
  const [lines, setLines] = useState<LogLine[]>([]);
  const [dropped, setDropped] = useState(0);
  const [state, setState] = useState<State>("connecting");
  const [error, setError] = useState<unknown>();
  const [attempt, setAttempt] = useState(0);
  const box = useRef<HTMLDivElement>(null);
  const stick = useRef(true);

  useEffect(() => {
    const ctl = new AbortController();
    setLines([]);
    setDropped(0);
    setError(undefined);
    setState("connecting");
    let cursor = "";
    let ended = false;
    (async () => {
      // Reconnects after a dropped stream, resuming at the last cursor.
      for (let tries = 0; !ended && !ctl.signal.aborted; tries++) {
        try {
          await streams.followLogs(
            runId,
            task,
            cursor,
            (event) => {
              if (event.event === "lines") {
                const message = JSON.parse(event.data) as { lines?: LogLine[]; next_cursor?: string };
                if (message.next_cursor) cursor = message.next_cursor;
                const fresh = message.lines ?? [];
                setState("following");
                setLines((old) => {
                  const all = old.concat(fresh);
                  if (all.length <= MAX_LINES) return all;
                  setDropped((d) => d + all.length - MAX_LINES);
                  return all.slice(all.length - MAX_LINES);
                });
              } else if (event.event === "end") {
                ended = true;
              } else if (event.event === "error") {
                const body = JSON.parse(event.data) as { code?: string; message?: string };
                // The server ended the stream with an error: not a dropped
                // connection, so no automatic reconnect.
                throw new ApiError(500, body.code ?? "UNKNOWN", body.message ?? "the log stream failed");
              }
            },
            ctl.signal,
          );
          if (!ended && !ctl.signal.aborted) setState("connecting");
        } catch (e) {
          if (ctl.signal.aborted) return;
          if (e instanceof ApiError && e.status !== 0) {
            setError(e);
            setState("failed");
            return;
          }
          setError(e);
          await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** tries, 5000)));
        }
      }
      if (!ctl.signal.aborted) {
        setError(undefined);
        setState("ended");
      }
    })();
    return () => ctl.abort();
  }, [runId, task, generation, attempt]);

  const shown = index === undefined ? lines : lines.filter((l) => l.parallel_index === index);

  useLayoutEffect(() => {
    const el = box.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  }, [shown.length]);

  const onScroll = () => {
    const el = box.current;
    if (el) stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
  };

  const label = state === "following" ? "following" : state === "ended" ? "complete" : state;
  return (
    <section class="logs" aria-label={`Log of ${task}`}>
      <header class="logs-head">
        <h3>Log</h3>
        <span class={`live live-${state}`} data-log-state={state}>
          {label}
        </span>
        {state === "failed" && (
          <button type="button" onClick={() => setAttempt((a) => a + 1)}>
            Reconnect
          </button>
        )}
      </header>
      <ErrorNote error={error} />
      <div class="log-lines" ref={box} onScroll={onScroll} tabIndex={0} role="log" aria-live="off" data-log>
        {dropped > 0 && <div class="muted">{dropped} earlier lines not shown (`ork run logs` has them all)</div>}
        {shown.length === 0 && state !== "connecting" && <div class="muted">no output</div>}
        {shown.map((l, i) => (
          <div key={i} class={`log-line${l.stream === "stderr" ? " stderr" : ""}`}>
            <span class="log-time">
              <Time value={l.time} compact />
            </span>
            {l.parallel_index !== undefined && index === undefined && (
              <span class="log-index">[{l.parallel_index}]</span>
            )}
            {(l.attempt ?? 1) > 1 && <span class="log-attempt">#{l.attempt}</span>}
            <span class="log-text">{l.line ?? ""}</span>
          </div>
        ))}
      </div>
    </section>
  );
}
