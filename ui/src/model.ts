// Pure functions over runs: how a run's task runs become the nodes of its
// DAG (a fan-out of any size is one node with counts), how live updates are
// merged, and how statuses are summarised. No DOM here: unit-tested.

import type { Run, RunStatus, TaskRun, TaskStatus, Workflow } from "./types";

export const TASK_STATUSES: TaskStatus[] = [
  "running",
  "dispatched",
  "pending",
  "failed",
  "cancelled",
  "skipped",
  "success",
];

export type Counts = Partial<Record<TaskStatus, number>>;

/** One node of the drawn DAG: a task, with all its instances when it fans out. */
export interface TaskGroup {
  name: string;
  /** Upstream task names (from the workflow version; empty when unknown). */
  dependsOn: string[];
  /** True when the task fans out (any instance has a parallel index). */
  fanOut: boolean;
  /** Instances in index order (one for a plain task). */
  instances: TaskRun[];
  counts: Counts;
  /** The status the node is coloured with. */
  status: TaskStatus;
  /** How the fan-out was declared ("4", "for_each: t.files"), if known. */
  parallel: string;
}

/** The status of a group of instances: running while any instance is
 * under way (or some have finished and others wait), else pending while all
 * wait; once all are over, the worst outcome (failed, cancelled, skipped),
 * and success only when every instance succeeded. A failure inside a running
 * fan-out shows in its counts, not as the group's status. */
export function groupStatus(counts: Counts): TaskStatus {
  const total = Object.values(counts).reduce((a, b) => a + (b ?? 0), 0);
  if (total === 0) return "pending";
  const waiting = counts.pending ?? 0;
  const active = (counts.running ?? 0) + (counts.dispatched ?? 0);
  if (active > 0) return counts.running ? "running" : "dispatched";
  if (waiting > 0) return waiting === total ? "pending" : "running";
  for (const s of ["failed", "cancelled", "skipped"] as const) if (counts[s]) return s;
  return "success";
}

function byIndex(a: TaskRun, b: TaskRun): number {
  return (a.parallel_index ?? -1) - (b.parallel_index ?? -1);
}

/** Groups a run's task runs by task, in the workflow's task order where the
 * workflow is known (else first-seen order), with counts per status. */
export function groupTasks(tasks: TaskRun[], workflow?: Workflow): TaskGroup[] {
  const groups = new Map<string, TaskGroup>();
  const declared = workflow?.tasks ?? [];
  for (const t of declared) {
    const name = t.name ?? "";
    groups.set(name, {
      name,
      dependsOn: t.depends_on ?? [],
      fanOut: Boolean(t.parallel),
      instances: [],
      counts: {},
      status: "pending",
      parallel: t.parallel ?? "",
    });
  }
  for (const t of tasks) {
    const name = t.name ?? "";
    let g = groups.get(name);
    if (!g) {
      g = { name, dependsOn: [], fanOut: false, instances: [], counts: {}, status: "pending", parallel: "" };
      groups.set(name, g);
    }
    g.instances.push(t);
    if (t.parallel_index !== undefined || (t.parallel_count ?? 0) > 1) g.fanOut = true;
    const s = t.status ?? "pending";
    g.counts[s] = (g.counts[s] ?? 0) + 1;
  }
  for (const g of groups.values()) {
    g.instances.sort(byIndex);
    g.status = groupStatus(g.counts);
  }
  return [...groups.values()];
}

/** A key that changes only when the DAG's shape does (tasks and edges), so
 * the layout is computed once per shape, not per status change. */
export function shapeKey(groups: TaskGroup[]): string {
  return groups.map((g) => `${g.name}<${g.dependsOn.join(",")}${g.fanOut ? "*" : ""}`).join("|");
}

/** A WatchRun message (`WatchRunResponse`) as JSON. */
export interface WatchMessage {
  run?: Run;
  [changes: string]: unknown;
}

/** Applies one WatchRun message to the run shown. The first message of a
 * stream is the whole run and replaces it. Later ones carry the whole run
 * today, but a server may send only what changed, so they are merged: task
 * runs replace those of the same id (whether in `run.tasks` or in another
 * list of the message), the others are kept. Within one stream task runs are
 * only added (a fan-out's instances replace its placeholder), never removed. */
export function applyWatch(current: Run | undefined, message: WatchMessage, first: boolean): Run | undefined {
  const update = message.run;
  if (first || !current || (update && update.id !== current.id)) return update ?? current;
  const changed: TaskRun[] = [...(update?.tasks ?? [])];
  for (const [key, value] of Object.entries(message)) {
    if (key !== "run" && Array.isArray(value)) {
      changed.push(...value.filter((t): t is TaskRun => typeof t === "object" && t !== null && "id" in t));
    }
  }
  const next: Run = { ...current, ...(update ?? {}) };
  next.tasks = changed.length > 0 ? mergeTasks(current.tasks ?? [], changed) : (current.tasks ?? []);
  return next;
}

/** Task runs with `changed` replacing those of the same id. A fan-out's
 * placeholder gives way to its instances once they exist. */
export function mergeTasks(tasks: TaskRun[], changed: TaskRun[]): TaskRun[] {
  const byId = new Map(tasks.map((t) => [t.id, t] as const));
  for (const t of changed) byId.set(t.id, t);
  const expanded = new Set<string>();
  for (const t of byId.values()) if (t.parallel_index !== undefined) expanded.add(t.name ?? "");
  return [...byId.values()].filter((t) => t.parallel_index !== undefined || !expanded.has(t.name ?? ""));
}

export function runIsOver(status: RunStatus | undefined): boolean {
  return status === "success" || status === "failed" || status === "cancelled";
}

export function taskIsOver(status: TaskStatus | undefined): boolean {
  return status === "success" || status === "failed" || status === "skipped" || status === "cancelled";
}

/** Milliseconds between two timestamps (or until `now` while running). */
export function elapsed(start?: string, end?: string, now: number = Date.now()): number | undefined {
  if (!start) return undefined;
  const a = Date.parse(start);
  const b = end ? Date.parse(end) : now;
  if (Number.isNaN(a) || Number.isNaN(b)) return undefined;
  return Math.max(0, b - a);
}

/** "850 ms", "12.3 s", "4 m 05 s", "2 h 03 m", "3 d 04 h". */
export function formatDuration(ms: number | undefined): string {
  if (ms === undefined) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} m ${String(Math.floor(s % 60)).padStart(2, "0")} s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h} h ${String(m % 60).padStart(2, "0")} m`;
  return `${Math.floor(h / 24)} d ${String(h % 24).padStart(2, "0")} h`;
}

/** A JSON value as indented text, for a <pre> (never as markup). */
export function prettyJson(value: unknown): string {
  if (value === undefined) return "";
  return JSON.stringify(value, null, 2);
}
