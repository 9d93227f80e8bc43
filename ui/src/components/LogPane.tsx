// A task's log, following it live over the logs route's Server-Sent Events
// (`?follow=true`) until the task ends. Lines are untrusted text and are
// only ever rendered as text. The pane sticks to the bottom while the reader
// is at the bottom, and stays put when they scroll up to read.

import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { ApiError, streams } from "../api";
import { useVisible } from "../hooks";
import type { SseEvent } from "../sse";
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

type State = "connecting" | "following" | "paused" | "ended" | "failed";

export function LogPane({ runId, task, index, generation }: Props) {
  const [lines, setLines] = useState<LogLine[]>([]);
  const [dropped, setDropped] = useState(0);
  const [state, setState] = useState<State>("connecting");
  const [error, setError] = useState<unknown>();
  const [attempt, setAttempt] = useState(0);
  const box = useRef<HTMLDivElement>(null);
  const stick = useRef(true);

  const visible = useVisible();
  // Where the stream is, kept while a hidden tab pauses it; reset for
  // another task or after a retry.
  const cursor = useRef("");
  const ended = useRef(false);
  const received = useRef(0);

  useEffect(() => {
    cursor.current = "";
    ended.current = false;
    received.current = 0;
    setLines([]);
    setDropped(0);
    setError(undefined);
    setState("connecting");
  }, [runId, task, generation]);

  useEffect(() => {
    if (ended.current) return;
    if (!visible) {
      setState("paused");
      return;
    }
    const ctl = new AbortController();
    const onEvent = (event: SseEvent) => {
      if (event.event === "lines") {
        const message = JSON.parse(event.data) as { lines?: LogLine[]; next_cursor?: string };
        if (message.next_cursor) cursor.current = message.next_cursor;
        const fresh = message.lines ?? [];
        received.current += fresh.length;
        setDropped(Math.max(0, received.current - MAX_LINES));
        setLines((old) => {
          const all = old.concat(fresh);
          return all.length <= MAX_LINES ? all : all.slice(all.length - MAX_LINES);
        });
      } else if (event.event === "end") {
        ended.current = true;
      } else if (event.event === "error") {
        const body = JSON.parse(event.data) as { code?: string; message?: string };
        // The server ended the stream with an error: not a dropped
        // connection, so no automatic reconnect.
        throw new ApiError(500, body.code ?? "UNKNOWN", body.message ?? "the log stream failed");
      }
    };
    (async () => {
      // Reconnects after a dropped stream, resuming at the last cursor.
      let failures = 0;
      while (!ended.current && !ctl.signal.aborted) {
        try {
          setState("connecting");
          await streams.followLogs(runId, task, cursor.current, onEvent, ctl.signal, () => {
            failures = 0;
            setState("following");
            setError(undefined);
          });
        } catch (e) {
          if (ctl.signal.aborted) return;
          setError(e);
          if (e instanceof ApiError && e.status !== 0) {
            setState("failed");
            return;
          }
          failures++;
          await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** failures, 5000)));
        }
      }
      if (!ctl.signal.aborted) {
        setError(undefined);
        setState("ended");
      }
    })();
    return () => ctl.abort();
  }, [runId, task, generation, attempt, visible]);

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
