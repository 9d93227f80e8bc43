// One run: its header and actions (cancel, retry), its DAG coloured by
// status and kept live over `GET /runs/{id}/watch`, and the selected task.

import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { ApiError, api, serverFeatures, streams } from "../api";
import { Dag } from "../components/Dag";
import { Duration, ErrorNote, JsonBlock, Status, Time } from "../components/bits";
import { TaskPanel } from "../components/TaskPanel";
import { useNow, useTitle, useVisible } from "../hooks";
import { applyWatch, elapsed, groupTasks, runIsOver, type WatchMessage } from "../model";
import { Link, href, navigate, workflowHref, type Location } from "../router";
import type { Run, Workflow } from "../types";

type Live = "loading" | "live" | "polling" | "paused" | "ended" | "reconnecting";

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });

/** Keeps `run` current: the watch stream when the server has it (each
 * message merged in), else GetRun once a second, until the run ends. */
function useLiveRun(id: string, generation: number) {
  const [run, setRun] = useState<Run>();
  const [error, setError] = useState<unknown>();
  const [live, setLive] = useState<Live>("loading");
  const current = useRef<Run | undefined>(undefined);
  const visible = useVisible();

  useEffect(() => {
    if (!visible && current.current) {
      // A hidden tab holds no stream; it reads the run afresh when shown.
      setLive("paused");
      return;
    }
    const ctl = new AbortController();
    const { signal } = ctl;
    const show = (next: Run | undefined) => {
      current.current = next;
      setRun(next);
    };
    (async () => {
      const features = await serverFeatures();
      let latest = await api.getRun(id, signal);
      show(latest);
      setError(undefined);
      let failures = 0;
      while (!signal.aborted && !runIsOver(latest.status)) {
        try {
          if (features.watch) {
            setLive("live");
            let first = true;
            await streams.watchRun(
              id,
              (event) => {
                if (event.event === "run") {
                  const next = applyWatch(current.current, JSON.parse(event.data) as WatchMessage, first);
                  first = false;
                  failures = 0;
                  show(next);
                } else if (event.event === "error") {
                  const body = JSON.parse(event.data) as { code?: string; message?: string };
                  throw new ApiError(500, body.code ?? "UNKNOWN", body.message ?? "the watch failed");
                }
              },
              signal,
            );
          } else {
            setLive("polling");
            await sleep(1000, signal);
          }
          // The stream ended (the run did) or this is a poll: read it whole.
          if (signal.aborted) return;
          latest = await api.getRun(id, signal);
          show(latest);
          setError(undefined);
        } catch (e) {
          if (signal.aborted) return;
          setError(e);
          setLive("reconnecting");
          failures++;
          await sleep(Math.min(500 * 2 ** failures, 5000), signal);
          latest = current.current ?? latest;
        }
      }
      if (!signal.aborted) setLive("ended");
    })().catch((e) => {
      if (!signal.aborted) {
        setError(e);
        setLive("ended");
      }
    });
    return () => ctl.abort();
  }, [id, generation, visible]);

  return { run, error, live, setRun: (r: Run) => ((current.current = r), setRun(r)) };
}

/** The workflow version the run used, for the DAG's edges; undefined when
 * the server cannot give it (the DAG is then drawn without edges). */
function useRunWorkflow(run: Run | undefined): Workflow | undefined {
  const [workflow, setWorkflow] = useState<Workflow>();
  const name = run?.workflow ?? "";
  const version = run?.workflow_version ?? "";
  useEffect(() => {
    if (!name) return;
    let stale = false;
    (async () => {
      const features = await serverFeatures();
      const found = features.versions ? await api.getWorkflow(name, version) : await api.getWorkflow(name);
      if (!stale && (!version || found.version === version)) setWorkflow(found);
    })().catch(() => undefined);
    return () => void (stale = true);
  }, [name, version]);
  return workflow;
}

export function RunPage({ id, location }: { id: string; location: Location }) {
  const [generation, setGeneration] = useState(0);
  const { run, error, live, setRun } = useLiveRun(id, generation);
  const workflow = useRunWorkflow(run);
  const [busy, setBusy] = useState(false);
  const [actionError, setActionError] = useState<unknown>();
  const [confirmCancel, setConfirmCancel] = useState(false);
  const over = runIsOver(run?.status);
  const now = useNow(!over);
  useTitle(run ? `${run.workflow} ${run.status}` : "Run");

  const groups = useMemo(() => groupTasks(run?.tasks ?? [], workflow), [run, workflow]);
  const selectedName = location.query.get("task") ?? undefined;
  const selected = groups.find((g) => g.name === selectedName);
  const indexParam = location.query.get("index");
  const index = indexParam === null ? undefined : Number(indexParam);

  const select = (task: string | undefined, idx?: number) =>
    navigate(
      href(`/runs/${encodeURIComponent(id)}`, { task, index: idx === undefined ? undefined : String(idx) }),
      true,
    );

  const act = async (action: () => Promise<Run>) => {
    setBusy(true);
    setActionError(undefined);
    try {
      const updated = await action();
      if (updated.id) setRun(updated);
      setGeneration((g) => g + 1);
    } catch (e) {
      setActionError(e);
    } finally {
      setBusy(false);
      setConfirmCancel(false);
    }
  };

  if (!run) {
    return (
      <main id="main" class="page">
        <h1>Run</h1>
        {error ? <ErrorNote error={error} /> : <p class="muted">Loading…</p>}
      </main>
    );
  }

  return (
    <main id="main" class="page run-page" data-run={run.id} data-run-status={run.status}>
      <header class="page-head">
        <h1>
          <Link href={workflowHref(run.workflow)}>{run.workflow}</Link> <span class="muted mono">{run.id}</span>
        </h1>
        <Status status={run.status} />
        <span class={`live live-${live}`} title="How this page stays current" data-live={live}>
          {live === "polling" ? "refreshing" : live === "ended" ? "final" : live}
        </span>
        <div class="actions">
          {!over &&
            (confirmCancel ? (
              <>
                <button type="button" class="danger" disabled={busy} onClick={() => act(() => api.cancelRun(id))}>
                  Confirm cancel
                </button>
                <button type="button" onClick={() => setConfirmCancel(false)}>
                  Keep running
                </button>
              </>
            ) : (
              <button type="button" class="danger" disabled={busy} onClick={() => setConfirmCancel(true)}>
                Cancel run
              </button>
            ))}
          {over && run.status !== "success" && (
            <button
              type="button"
              disabled={busy}
              title="Re-run the failed, cancelled and skipped tasks, keeping every successful output"
              onClick={() => act(() => api.retryRun(id))}
            >
              Retry run
            </button>
          )}
        </div>
      </header>
      <ErrorNote error={actionError} />
      <ErrorNote error={error} />
      <dl class="facts inline">
        <div class="fact">
          <dt>Trigger</dt>
          <dd>{run.triggered_by || "manual"}</dd>
        </div>
        <div class="fact">
          <dt>Created</dt>
          <dd>
            <Time value={run.created_at} />
          </dd>
        </div>
        <div class="fact">
          <dt>Started</dt>
          <dd>
            <Time value={run.started_at} />
          </dd>
        </div>
        <div class="fact">
          <dt>Finished</dt>
          <dd>
            <Time value={run.finished_at} />
          </dd>
        </div>
        <div class="fact">
          <dt>Duration</dt>
          <dd>
            <Duration ms={elapsed(run.started_at, run.finished_at, now)} />
          </dd>
        </div>
        <div class="fact">
          <dt>Version</dt>
          <dd class="mono" title={run.workflow_version}>
            {(run.workflow_version ?? "").slice(0, 12)}
          </dd>
        </div>
      </dl>
      <details class="run-input">
        <summary>Run input</summary>
        <JsonBlock value={run.input} label="Run input" />
      </details>
      {!workflow && <p class="muted small">The workflow version is not available: dependencies are not drawn.</p>}
      <div class="run-body">
        <Dag
          groups={groups}
          selected={selectedName}
          onSelect={(name) => select(name === selectedName ? undefined : name)}
        />
        {selected ? (
          <TaskPanel
            runId={id}
            group={selected}
            index={index}
            onIndex={(i) => select(selected.name, i)}
            runOver={over}
            busy={busy}
            onRetryFrom={(task) => act(() => api.retryRun(id, task))}
            generation={generation}
            now={now}
          />
        ) : (
          <p class="muted panel-hint">Select a task to see its attempts, input, output, error and log.</p>
        )}
      </div>
    </main>
  );
}
