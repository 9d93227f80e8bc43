// The REST API's messages as the UI reads them: the proto3 JSON mapping of
// package ork.v1 (server/openapi.json). The mapping leaves out fields that
// hold their default value (empty strings, 0, false, empty lists), so every
// field is optional here and readers supply the default.

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export type RunStatus = "pending" | "running" | "success" | "failed" | "cancelled";
export type TaskStatus = "pending" | "dispatched" | "running" | "success" | "failed" | "skipped" | "cancelled";

export interface Attempt {
  attempt?: number;
  status?: string;
  error?: string;
  dispatched_at?: string;
  started_at?: string;
  finished_at?: string;
}

export interface TaskRun {
  id?: string;
  run_id?: string;
  name?: string;
  status?: TaskStatus;
  attempt?: number;
  max_retries?: number;
  parallel_index?: number;
  parallel_count?: number;
  executor?: string;
  input?: Json;
  output?: Json;
  error?: string;
  pending_reason?: string;
  created_at?: string;
  ready_at?: string;
  dispatched_at?: string;
  started_at?: string;
  finished_at?: string;
  attempts?: Attempt[];
}

export interface Run {
  id?: string;
  workflow?: string;
  workflow_version?: string;
  status?: RunStatus;
  triggered_by?: string;
  input?: Json;
  created_at?: string;
  started_at?: string;
  finished_at?: string;
  tasks?: TaskRun[];
  owner?: string;
}

export interface WorkflowTask {
  name?: string;
  executor?: string;
  depends_on?: string[];
  parallel?: string;
  file?: string;
  retries?: number;
  timeout_seconds?: number;
  handler?: string;
}

/** A declared field of a run's input (`inputs:`), on servers that have them. */
export interface WorkflowInput {
  name?: string;
  schema?: Json;
  required?: boolean;
  default_value?: Json;
  description?: string;
}

export interface Workflow {
  name?: string;
  version?: string;
  schedule?: string;
  tasks?: WorkflowTask[];
  created_at?: string;
  updated_at?: string;
  definition_yaml?: string;
  inputs?: WorkflowInput[];
}

export interface LogLine {
  task?: string;
  parallel_index?: number;
  attempt?: number;
  stream?: string;
  line?: string;
  time?: string;
}

/** An attached pool worker (`GET /workers`), on servers that list them. */
export interface PoolWorker {
  session_id?: string;
  name?: string;
  handlers?: string[];
  slots?: number;
  slots_in_use?: number;
  draining?: boolean;
  attached_at?: string;
  last_seen_at?: string;
  server?: string;
}
