// Run history: newest first, filtered by workflow, status and trigger (and
// start time and label on servers that filter by them), paged, and refreshed
// every two seconds while the tab is visible.
//
// Filters the server cannot apply yet are applied to the runs it returned,
// and the page says so, so a filtered view never pretends to be complete.

import { useEffect, useRef, useState } from "preact/hooks";
import { api, listRuns, serverFeatures, type Features, type RunCursor, type RunFilter } from "../api";
import { ErrorNote } from "../components/bits";
import { RunsTable } from "../components/RunsTable";
import { useInterval, useNow, useTitle } from "../hooks";
import { href, navigate, type Location } from "../router";
import type { Run } from "../types";

const PAGE_SIZE = 50;
const STATUSES = ["pending", "running", "success", "failed", "cancelled"];
const TRIGGERS = ["manual", "schedule", "retry", "event", "webhook"];

export function RunsPage({ location }: { location: Location }) {
  useTitle("Runs");
  const filter: RunFilter = {
    workflow: location.query.get("workflow") ?? "",
    status: location.query.get("status") ?? "",
    trigger: location.query.get("trigger") ?? "",
    since: location.query.get("since") ?? "",
    label: location.query.get("label") ?? "",
  };
  const key = `${filter.workflow}|${filter.status}|${filter.trigger}|${filter.since}|${filter.label}`;
  const [labelText, setLabelText] = useState(filter.label ?? "");
  const [workflows, setWorkflows] = useState<string[]>([]);
  const [features, setFeatures] = useState<Features>();
  const [runs, setRuns] = useState<Run[]>([]);
  const [next, setNext] = useState<RunCursor>();
  const [loaded, setLoaded] = useState(false);
  const [error, setError] = useState<unknown>();
  // What the current view was loaded with: the limit (limit-based servers)
  // or the number of token pages (keyset servers), so a refresh keeps it.
  const view = useRef<RunCursor | undefined>(undefined);
  const now = useNow(runs.some((r) => r.status === "running" || r.status === "pending"));

  useEffect(() => {
    api.listWorkflows().then(
      (w) => setWorkflows(w.map((x) => x.name ?? "")),
      () => undefined,
    );
    serverFeatures().then(setFeatures, () => undefined);
  }, []);

  useEffect(() => {
    view.current = undefined;
    setRuns([]);
    setNext(undefined);
    setLoaded(false);
  }, [key]);

  const refresh = async () => {
    try {
      const page = await listRuns(
        filter,
        PAGE_SIZE,
        view.current && "limit" in view.current ? view.current : undefined,
      );
      setError(undefined);
      setLoaded(true);
      if (page.replaces && !(view.current && "pageToken" in view.current)) {
        setRuns(page.runs);
        setNext(page.next);
      } else {
        // Keyset paging with more pages shown: refresh the first page and
        // keep the older pages already loaded.
        setRuns((old) => {
          const fresh = new Set(page.runs.map((r) => r.id));
          return page.runs.concat(old.filter((r) => !fresh.has(r.id)));
        });
      }
    } catch (e) {
      setError(e);
    }
  };

  useInterval(refresh, 2000, [key]);

  const more = async () => {
    if (!next) return;
    try {
      const page = await listRuns(filter, PAGE_SIZE, next);
      view.current = next;
      if (page.replaces) setRuns(page.runs);
      else
        setRuns((old) => {
          const seen = new Set(old.map((r) => r.id));
          return old.concat(page.runs.filter((r) => !seen.has(r.id)));
        });
      setNext(page.next);
    } catch (e) {
      setError(e);
    }
  };

  const set = (name: keyof RunFilter, value: string) =>
    navigate(href("/", { ...filter, [name]: value || undefined }), true);

  const clientSide =
    (filter.status && features && !features.runStatusFilter) ||
    (filter.trigger && features && !features.runTriggerParam);

  return (
    <main id="main" class="page">
      <header class="page-head">
        <h1>Runs</h1>
      </header>
      <form class="filters" onSubmit={(e) => e.preventDefault()} aria-label="Filter runs">
        <label>
          Workflow
          <select value={filter.workflow} onChange={(e) => set("workflow", e.currentTarget.value)} name="workflow">
            <option value="">all</option>
            {workflows.map((w) => (
              <option key={w} value={w}>
                {w}
              </option>
            ))}
          </select>
        </label>
        <label>
          Status
          <select value={filter.status} onChange={(e) => set("status", e.currentTarget.value)} name="status">
            <option value="">any</option>
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </label>
        <label>
          Trigger
          <select value={filter.trigger} onChange={(e) => set("trigger", e.currentTarget.value)} name="trigger">
            <option value="">any</option>
            {TRIGGERS.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </label>
        {features?.runTimeFilter && (
          <label>
            Started
            <select value={filter.since} onChange={(e) => set("since", e.currentTarget.value)} name="since">
              <option value="">any time</option>
              <option value="1h">in the last hour</option>
              <option value="24h">in the last 24 hours</option>
              <option value="7d">in the last 7 days</option>
            </select>
          </label>
        )}
        {features?.runLabelFilter && (
          <label>
            Label
            <input
              name="label"
              type="search"
              placeholder="key=value"
              value={labelText}
              onInput={(e) => setLabelText(e.currentTarget.value)}
              onChange={(e) => set("label", e.currentTarget.value.trim())}
            />
          </label>
        )}
      </form>
      {clientSide && (
        <p class="note small" role="note">
          This server filters runs by workflow only: the status and trigger filters apply to the newest runs loaded
          below. Newer servers filter the whole history.
        </p>
      )}
      <ErrorNote error={error} />
      {loaded ? <RunsTable runs={runs} now={now} /> : !error && <p class="muted">Loading…</p>}
      {next && (
        <p>
          <button type="button" onClick={more}>
            Show older runs
          </button>
        </p>
      )}
    </main>
  );
}
