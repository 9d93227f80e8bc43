// The selected task of a run: for a fan-out, its instances (paged, filtered
// by status) and the chosen one; for each instance its status, why it is
// pending, timing, attempts, input, output, error and log, and the "retry
// from this task" action.

import { useLayoutEffect, useRef, useState } from "preact/hooks";
import { TASK_STATUSES, elapsed, taskIsOver, type TaskGroup } from "../model";
import type { TaskRun } from "../types";
import { Duration, JsonBlock, Status, TextBlock, Time } from "./bits";
import { LogPane } from "./LogPane";

const PAGE = 25;

interface Props {
  runId: string;
  group: TaskGroup;
  /** The fan-out instance shown, by parallel index. */
  index: number | undefined;
  onIndex: (index: number | undefined) => void;
  runOver: boolean;
  busy: boolean;
  onRetryFrom: (task: string) => void;
  generation: number;
  now: number;
}

export function TaskPanel(props: Props) {
  const { group, index, runOver, busy } = props;
  const expanded = group.instances.some((i) => i.parallel_index !== undefined);
  const instance =
    group.fanOut && expanded ? group.instances.find((i) => i.parallel_index === index) : group.instances[0];
  return (
    <section class="panel" aria-labelledby="task-title" data-panel-task={group.name}>
      <header class="panel-head">
        <h2 id="task-title">{group.name}</h2>
        <Status status={group.status} />
        <button
          type="button"
          disabled={!runOver || busy}
          title={
            runOver ? "Re-run this task and everything downstream of it" : "The run must end first (cancel it, or wait)"
          }
          onClick={() => props.onRetryFrom(group.name)}
        >
          Retry from this task
        </button>
      </header>
      <div class="panel-grid">
        <div class="panel-main">
          {group.fanOut && expanded && <Instances {...props} />}
          {instance ? (
            <Instance task={instance} now={props.now} />
          ) : (
            <p class="muted">Choose an instance to see its details; the log shows every instance.</p>
          )}
        </div>
        <LogPane
          runId={props.runId}
          task={group.name}
          index={group.fanOut && expanded ? instance?.parallel_index : undefined}
          generation={props.generation}
        />
      </div>
    </section>
  );
}

function Instances({ group, index, onIndex }: Props) {
  const [filter, setFilter] = useState("");
  // Start on the page of the instance the URL names.
  const [page, setPage] = useState(() => {
    const at = group.instances.findIndex((i) => i.parallel_index === index);
    return at < 0 ? 0 : Math.floor(at / PAGE);
  });
  const matching = filter ? group.instances.filter((i) => (i.status ?? "pending") === filter) : group.instances;
  const wrap = useRef<HTMLDivElement>(null);
  // Keep the chosen instance's row in view inside the table (not the page).
  useLayoutEffect(() => {
    const box = wrap.current;
    const row = box?.querySelector<HTMLElement>("tr.selected");
    if (!box || !row) return;
    const head = box.querySelector("thead")?.getBoundingClientRect().height ?? 0;
    if (row.offsetTop - head < box.scrollTop || row.offsetTop + row.offsetHeight > box.scrollTop + box.clientHeight) {
      box.scrollTop = Math.max(0, row.offsetTop - head - 4);
    }
  }, [index, page]);
  const pages = Math.max(1, Math.ceil(matching.length / PAGE));
  const current = Math.min(page, pages - 1);
  const shown = matching.slice(current * PAGE, current * PAGE + PAGE);
  return (
    <div class="instances">
      <div class="counts" role="group" aria-label="Show instances by status">
        <button
          type="button"
          class={filter === "" ? "chip on" : "chip"}
          aria-pressed={filter === ""}
          onClick={() => {
            setFilter("");
            setPage(0);
          }}
        >
          all {group.instances.length.toLocaleString()}
        </button>
        {TASK_STATUSES.filter((s) => group.counts[s]).map((s) => (
          <button
            key={s}
            type="button"
            class={`chip status-${s}${filter === s ? " on" : ""}`}
            aria-pressed={filter === s}
            onClick={() => {
              setFilter(s);
              setPage(0);
            }}
          >
            {s} {(group.counts[s] ?? 0).toLocaleString()}
          </button>
        ))}
      </div>
      <div class="table-wrap instance-table" ref={wrap}>
        <table class="table compact">
          <thead>
            <tr>
              <th scope="col">#</th>
              <th scope="col">Status</th>
              <th scope="col">Attempt</th>
              <th scope="col">Why pending / error</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((i) => (
              <tr key={i.id} class={i.parallel_index === index ? "selected" : ""}>
                <td>
                  <button
                    type="button"
                    class="linkish"
                    aria-pressed={i.parallel_index === index}
                    onClick={() => onIndex(i.parallel_index === index ? undefined : i.parallel_index)}
                  >
                    {i.parallel_index}
                  </button>
                </td>
                <td>
                  <Status status={i.status} />
                </td>
                <td>{i.attempt ?? 0}</td>
                <td class="clip">{i.status === "pending" ? (i.pending_reason ?? "") : (i.error ?? "")}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {pages > 1 && (
        <nav class="pager" aria-label="Instance pages">
          <button type="button" disabled={current === 0} onClick={() => setPage(current - 1)}>
            Previous
          </button>
          <span>
            {current * PAGE + 1}–{Math.min(matching.length, (current + 1) * PAGE)} of {matching.length.toLocaleString()}
          </span>
          <button type="button" disabled={current >= pages - 1} onClick={() => setPage(current + 1)}>
            Next
          </button>
        </nav>
      )}
    </div>
  );
}

function Instance({ task, now }: { task: TaskRun; now: number }) {
  const over = taskIsOver(task.status);
  const attempts = task.attempts ?? [];
  return (
    <div class="instance">
      {task.parallel_index !== undefined && (
        <h3>
          Instance {task.parallel_index} of {task.parallel_count ?? "?"}
        </h3>
      )}
      {task.status === "pending" && (
        <p class="why" data-why-pending>
          <strong>Why pending:</strong> {task.pending_reason || "waiting to be scheduled"}
        </p>
      )}
      <dl class="facts">
        <dt>Status</dt>
        <dd>
          <Status status={task.status} />
        </dd>
        <dt>Attempt</dt>
        <dd>
          {task.attempt ?? 0} of {(task.max_retries ?? 0) + 1}
        </dd>
        <dt>Executor</dt>
        <dd>{task.executor || "subprocess"}</dd>
        <dt>Created</dt>
        <dd>
          <Time value={task.created_at} />
        </dd>
        <dt>Ready</dt>
        <dd>
          <Time value={task.ready_at} />
        </dd>
        <dt>Started</dt>
        <dd>
          <Time value={task.started_at} />
        </dd>
        <dt>Finished</dt>
        <dd>
          <Time value={task.finished_at} />
        </dd>
        <dt>Duration</dt>
        <dd>
          <Duration ms={elapsed(task.started_at, task.finished_at, now)} />
          {!over && task.started_at ? " so far" : ""}
        </dd>
      </dl>
      {task.error && (
        <>
          <h3>Error</h3>
          <TextBlock text={task.error} label="Error" />
        </>
      )}
      <h3>Output</h3>
      <div data-output>
        <JsonBlock value={task.output} label="Output" />
      </div>
      <h3>Input</h3>
      <JsonBlock value={task.input ?? undefined} label="Input" />
      {attempts.length > 0 && (
        <>
          <h3>Attempts</h3>
          <div class="table-wrap">
            <table class="table compact">
              <thead>
                <tr>
                  <th scope="col">#</th>
                  <th scope="col">Status</th>
                  <th scope="col">Dispatched</th>
                  <th scope="col">Duration</th>
                  <th scope="col">Error</th>
                </tr>
              </thead>
              <tbody>
                {attempts.map((a) => (
                  <tr key={a.attempt}>
                    <td>{a.attempt}</td>
                    <td>
                      <Status status={a.status} />
                    </td>
                    <td>
                      <Time value={a.dispatched_at} />
                    </td>
                    <td>
                      <Duration ms={elapsed(a.started_at, a.finished_at, now)} />
                    </td>
                    <td class="clip" title={a.error ?? ""}>
                      {a.error ?? ""}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </>
      )}
    </div>
  );
}
