// The UI's only way to the server: the public REST API, the same routes and
// JSON that `curl` users get (server/openapi.json). A token, when the user
// gave one, is kept in sessionStorage and sent as `Authorization: Bearer` on
// every call; `ork dev` on loopback needs none.
//
// Newer servers add routes and fields (the pool worker list, declared run
// inputs, run-history filters and page tokens). What this server has is read
// once from its OpenAPI document, so each page can use a feature when it is
// there and say plainly when it is not, instead of failing.

import { readEvents, type SseEvent } from "./sse";
import type { Json, LogLine, PoolWorker, Run, TaskRun, Workflow } from "./types";

const TOKEN_KEY = "ork.token";

/** An error the API answered with (`{code, message, details}`), or a
 * network failure (status 0). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }

  get unauthenticated(): boolean {
    return this.status === 401 || this.code === "UNAUTHENTICATED";
  }
}

/** Why the server refused a call for want of a valid token: its message,
 * and whether a token was sent (so it was refused, not missing). */
export interface AuthProblem {
  message: string;
  tokenSent: boolean;
}

type AuthListener = (problem: AuthProblem | undefined) => void;
const authListeners = new Set<AuthListener>();

/** Called with the problem when the server refused a call for want of a
 * (valid) token, and with undefined once a token is set or forgotten. */
export function onAuthRequired(listener: AuthListener): () => void {
  authListeners.add(listener);
  return () => authListeners.delete(listener);
}

export function token(): string {
  try {
    return sessionStorage.getItem(TOKEN_KEY) ?? "";
  } catch {
    return "";
  }
}

export function setToken(value: string): void {
  try {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage disabled: the token lives as long as the page.
  }
  features = undefined;
  for (const l of authListeners) l(undefined);
}

function headers(json: boolean): HeadersInit {
  const h: Record<string, string> = { Accept: json ? "application/json" : "text/event-stream" };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

async function failure(response: Response, tokenSent: boolean): Promise<ApiError> {
  let code = "UNKNOWN";
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = (await response.json()) as { code?: string; message?: string };
    if (body.code) code = body.code;
    if (body.message) message = body.message;
  } catch {
    // Not the API's JSON error (a proxy, say): the status line says enough.
  }
  const error = new ApiError(response.status, code, message);
  if (error.unauthenticated) for (const l of authListeners) l({ message, tokenSent });
  return error;
}

async function call<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
  let response: Response;
  try {
    const init: RequestInit = { method, headers: headers(true) };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { ...headers(true), "Content-Type": "application/json" };
    }
    if (signal) init.signal = signal;
    response = await fetch(path, init);
  } catch (e) {
    if (signal?.aborted) throw e;
    throw new ApiError(0, "UNAVAILABLE", "the server did not answer; is it running?");
  }
  if (!response.ok) throw await failure(response, Boolean(token()));
  return (await response.json()) as T;
}

function query(params: Record<string, string | number | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== "") q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : "";
}

const seg = encodeURIComponent;

/** What this server's API offers beyond the base routes. */
export interface Features {
  /** `GET /workers`: attached pool workers. */
  workers: boolean;
  /** `Workflow.inputs`: declared run inputs, for the start-run form. */
  inputs: boolean;
  /** `GET /runs/{id}/watch`: live run updates as Server-Sent Events. */
  watch: boolean;
  /** `GET /workflows/{name}?version=`: the DAG of the version a run used. */
  versions: boolean;
  /** ListRuns filters and keyset paging. */
  runStatusFilter: boolean;
  /** The trigger filter's query parameter, "" when there is none. */
  runTriggerParam: string;
  runPageToken: boolean;
  /** `created_after`: runs started within a recent window. */
  runTimeFilter: boolean;
  /** `label`: runs carrying a `key=value` label. */
  runLabelFilter: boolean;
}

let features: Promise<Features> | undefined;

interface OpenApi {
  paths?: Record<string, Record<string, { parameters?: { name?: string }[] }>>;
  components?: { schemas?: Record<string, { properties?: Record<string, unknown> }> };
}

/** Reads the feature set from an OpenAPI document (pure, unit-tested). */
export function featuresOf(doc: OpenApi): Features {
  const paths = doc.paths ?? {};
  const params = (path: string) => new Set((paths[path]?.get?.parameters ?? []).map((p) => p.name ?? ""));
  const runs = params("/runs");
  return {
    workers: Boolean(paths["/workers"]?.get),
    inputs: Boolean(doc.components?.schemas?.Workflow?.properties?.inputs),
    watch: Boolean(paths["/runs/{id}/watch"]?.get),
    versions: params("/workflows/{name}").has("version"),
    runStatusFilter: runs.has("status"),
    runTriggerParam: ["trigger", "triggered_by"].find((p) => runs.has(p)) ?? "",
    runPageToken: runs.has("page_token"),
    runTimeFilter: runs.has("created_after"),
    runLabelFilter: runs.has("label"),
  };
}

export function serverFeatures(): Promise<Features> {
  features ??= call<OpenApi>("GET", "/openapi.json").then(featuresOf, (e) => {
    features = undefined;
    throw e;
  });
  return features;
}

/** One page of run history. `next` continues it (a page token on servers
 * with keyset paging, else a larger limit), absent at the end. */
export interface RunPage {
  runs: Run[];
  next?: RunCursor;
  /** True when the page replaces what was shown (limit-based servers). */
  replaces: boolean;
}

export type RunCursor = { pageToken: string } | { limit: number };

export interface RunFilter {
  workflow?: string;
  status?: string;
  trigger?: string;
  /** A window back from now: `1h`, `24h`, `7d` (servers with `created_after`). */
  since?: string;
  /** `key=value` (servers with `label`). */
  label?: string;
}

const WINDOWS: Record<string, number> = { "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3 };

/** The server-side filters this server understands, as query parameters. */
function serverFilters(filter: RunFilter, f: Features, now = Date.now()): Record<string, string | undefined> {
  const window = filter.since ? WINDOWS[filter.since] : undefined;
  return {
    workflow: filter.workflow,
    status: f.runStatusFilter ? filter.status : undefined,
    ...(f.runTriggerParam ? { [f.runTriggerParam]: filter.trigger } : {}),
    created_after: f.runTimeFilter && window ? new Date(now - window).toISOString() : undefined,
    label: f.runLabelFilter ? filter.label : undefined,
  };
}

/** The most runs a limit-based server returns in one call. */
const MAX_LIMIT = 1000;

export async function listRuns(filter: RunFilter, pageSize: number, cursor?: RunCursor): Promise<RunPage> {
  const f = await serverFeatures();
  if (f.runPageToken) {
    const token = cursor && "pageToken" in cursor ? cursor.pageToken : undefined;
    const page = await call<{ runs?: Run[]; next_page_token?: string }>(
      "GET",
      `/runs${query({ ...serverFilters(filter, f), limit: pageSize, page_token: token })}`,
    );
    const runs = clientFilter(page.runs ?? [], filter, f);
    const out: RunPage = { runs, replaces: token === undefined };
    if (page.next_page_token) out.next = { pageToken: page.next_page_token };
    return out;
  }
  const limit = Math.min(cursor && "limit" in cursor ? cursor.limit : pageSize, MAX_LIMIT);
  const page = await call<{ runs?: Run[] }>("GET", `/runs${query({ ...serverFilters(filter, f), limit })}`);
  const all = page.runs ?? [];
  const out: RunPage = { runs: clientFilter(all, filter, f), replaces: true };
  if (all.length >= limit && limit < MAX_LIMIT) out.next = { limit: Math.min(limit + pageSize, MAX_LIMIT) };
  return out;
}

/** Filters the server could not apply, applied to the page it returned. */
function clientFilter(runs: Run[], filter: RunFilter, f: Features): Run[] {
  return runs.filter(
    (r) =>
      (!filter.status || f.runStatusFilter || r.status === filter.status) &&
      (!filter.trigger || f.runTriggerParam || (r.triggered_by ?? "") === filter.trigger),
  );
}

export const api = {
  listWorkflows: () => call<{ workflows?: Workflow[] }>("GET", "/workflows").then((r) => r.workflows ?? []),
  getWorkflow: (name: string, version?: string) =>
    call<{ workflow?: Workflow }>("GET", `/workflows/${seg(name)}${query({ version })}`).then((r) => r.workflow ?? {}),
  startRun: (workflow: string, input: Json) =>
    call<{ run?: Run }>("POST", `/workflows/${seg(workflow)}/runs`, { input }).then((r) => r.run ?? {}),
  /** The newest runs of one workflow (its page, the last-runs dots). */
  getRunsOf: (workflow: string, limit: number) =>
    call<{ runs?: Run[] }>("GET", `/runs${query({ workflow, limit })}`).then((r) => r.runs ?? []),
  getRun: (id: string, signal?: AbortSignal) =>
    call<{ run?: Run }>("GET", `/runs/${seg(id)}`, undefined, signal).then((r) => r.run ?? {}),
  cancelRun: (id: string) => call<{ run?: Run }>("POST", `/runs/${seg(id)}/cancel`, {}).then((r) => r.run ?? {}),
  retryRun: (id: string, task?: string) =>
    call<{ run?: Run }>("POST", `/runs/${seg(id)}/retry`, task ? { task } : {}).then((r) => r.run ?? {}),
  listTaskRuns: (id: string) =>
    call<{ task_runs?: TaskRun[] }>("GET", `/runs/${seg(id)}/tasks`).then((r) => r.task_runs ?? []),
  listWorkers: () => call<{ workers?: PoolWorker[] }>("GET", "/workers").then((r) => r.workers ?? []),
};

/** Opens a Server-Sent Events route and calls `onEvent` per event until the
 * stream ends (resolves) or fails (rejects); abort `signal` to stop.
 * `onOpen` is called once the server accepted the stream. */
export async function stream(
  path: string,
  onEvent: (e: SseEvent) => void,
  signal: AbortSignal,
  onOpen?: () => void,
): Promise<void> {
  let response: Response;
  try {
    response = await fetch(path, { headers: headers(false), signal });
  } catch (e) {
    if (signal.aborted) return;
    throw new ApiError(0, "UNAVAILABLE", "the server did not answer; is it running?");
  }
  if (!response.ok) throw await failure(response, Boolean(token()));
  if (!response.body) throw new ApiError(0, "UNAVAILABLE", "the browser gave no response stream");
  onOpen?.();
  try {
    await readEvents(response.body, onEvent, signal);
  } catch (e) {
    if (signal.aborted) return;
    if (e instanceof ApiError) throw e;
    throw new ApiError(0, "UNAVAILABLE", "the stream from the server broke off");
  }
}

export const streams = {
  /** `GET /runs/{id}/watch`: the run whenever it or a task changes. */
  watchRun: (id: string, onEvent: (e: SseEvent) => void, signal: AbortSignal) =>
    stream(`/runs/${seg(id)}/watch`, onEvent, signal),
  /** `GET /runs/{id}/tasks/{name}/logs?follow=true`: new log lines. */
  followLogs: (
    id: string,
    task: string,
    cursor: string,
    onEvent: (e: SseEvent) => void,
    signal: AbortSignal,
    onOpen?: () => void,
  ) => stream(`/runs/${seg(id)}/tasks/${seg(task)}/logs${query({ follow: "true", cursor })}`, onEvent, signal, onOpen),
};

export type { LogLine };
