// A table of runs: status, workflow, trigger, start and duration, each row
// linking to its run.

import { elapsed } from "../model";
import { Link, runHref, workflowHref } from "../router";
import type { Run } from "../types";
import { Duration, Status, Time } from "./bits";

export function RunsTable({ runs, now, showWorkflow = true }: { runs: Run[]; now: number; showWorkflow?: boolean }) {
  if (runs.length === 0) return <p class="muted">No runs.</p>;
  return (
    <div class="table-wrap">
      <table class="table runs">
        <thead>
          <tr>
            <th scope="col">Status</th>
            <th scope="col">Run</th>
            {showWorkflow && <th scope="col">Workflow</th>}
            <th scope="col" class="wide-only">
              Trigger
            </th>
            <th scope="col">Started</th>
            <th scope="col">Duration</th>
          </tr>
        </thead>
        <tbody>
          {runs.map((r) => (
            <tr key={r.id} data-run-row={r.id} data-status={r.status}>
              <td>
                <Status status={r.status} />
              </td>
              <td class="mono">
                <Link href={runHref(r.id)} title={r.id}>
                  {(r.id ?? "").slice(-12)}
                </Link>
              </td>
              {showWorkflow && (
                <td>
                  <Link href={workflowHref(r.workflow)}>{r.workflow}</Link>
                </td>
              )}
              <td class="wide-only">{r.triggered_by || "manual"}</td>
              <td>
                <Time value={r.started_at ?? r.created_at} />
              </td>
              <td>
                <Duration ms={elapsed(r.started_at, r.finished_at, now)} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
