// Workflows: the list (schedule, last runs), and one workflow's page: its
// tasks, the YAML of the current version, its runs, and a form that starts
// a run (built from the declared inputs on servers that expose them).

import { useEffect, useState } from "preact/hooks";
import { api, serverFeatures, type Features } from "../api";
import { ErrorNote, NeedsNewerServer, TextBlock, Time } from "../components/bits";
import { RunsTable } from "../components/RunsTable";
import { useInterval, useNow, useTitle } from "../hooks";
import { buildInput, choicesOf, controlOf, initialText } from "../inputs";
import { Link, href, navigate, runHref, workflowHref } from "../router";
import type { Json, Run, Workflow, WorkflowInput } from "../types";

const LAST_RUNS = 5;

export function WorkflowsPage() {
  useTitle("Workflows");
  const [workflows, setWorkflows] = useState<Workflow[]>();
  const [lastRuns, setLastRuns] = useState<Record<string, Run[]>>({});
  const [error, setError] = useState<unknown>();

  useInterval(
    async () => {
      try {
        const list = await api.listWorkflows();
        setWorkflows(list);
        setError(undefined);
        const entries = await Promise.all(
          list.map(async (w) => {
            const runs = await api.getRunsOf(w.name ?? "", LAST_RUNS).catch(() => [] as Run[]);
            return [w.name ?? "", runs] as const;
          }),
        );
        setLastRuns(Object.fromEntries(entries));
      } catch (e) {
        setError(e);
      }
    },
    5000,
    [],
  );

  return (
    <main id="main" class="page">
      <header class="page-head">
        <h1>Workflows</h1>
      </header>
      <ErrorNote error={error} />
      {!workflows ? (
        !error && <p class="muted">Loading…</p>
      ) : workflows.length === 0 ? (
        <p class="muted">
          No workflows yet. Deploy one with <code>ork workflow deploy FILE.yaml</code>.
        </p>
      ) : (
        <div class="table-wrap">
          <table class="table">
            <thead>
              <tr>
                <th scope="col">Workflow</th>
                <th scope="col">Schedule</th>
                <th scope="col">Tasks</th>
                <th scope="col">Last runs</th>
                <th scope="col">Updated</th>
              </tr>
            </thead>
            <tbody>
              {workflows.map((w) => (
                <tr key={w.name} data-workflow-row={w.name}>
                  <td>
                    <Link href={workflowHref(w.name)}>{w.name}</Link>
                  </td>
                  <td class="mono">{w.schedule || <span class="muted">manual</span>}</td>
                  <td>{w.tasks?.length ?? 0}</td>
                  <td>
                    <span class="last-runs">
                      {(lastRuns[w.name ?? ""] ?? []).map((r) => (
                        <Link
                          key={r.id}
                          href={runHref(r.id)}
                          class={`run-dot status-${r.status}`}
                          title={`${r.status} · ${r.created_at ?? ""}`}
                        >
                          <span class="visually-hidden">{r.status}</span>
                        </Link>
                      ))}
                    </span>
                  </td>
                  <td>
                    <Time value={w.updated_at} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </main>
  );
}

export function WorkflowPage({ name }: { name: string }) {
  useTitle(name);
  const [workflow, setWorkflow] = useState<Workflow>();
  const [features, setFeatures] = useState<Features>();
  const [runs, setRuns] = useState<Run[]>([]);
  const [error, setError] = useState<unknown>();
  const now = useNow(runs.some((r) => r.status === "running"));

  useEffect(() => {
    setWorkflow(undefined);
    api.getWorkflow(name).then(setWorkflow, setError);
    serverFeatures().then(setFeatures, () => undefined);
  }, [name]);

  useInterval(
    () => {
      api.getRunsOf(name, 20).then(setRuns, () => undefined);
    },
    2000,
    [name],
  );

  if (!workflow) {
    return (
      <main id="main" class="page">
        <h1>{name}</h1>
        {error ? <ErrorNote error={error} /> : <p class="muted">Loading…</p>}
      </main>
    );
  }
  return (
    <main id="main" class="page" data-workflow={workflow.name}>
      <header class="page-head">
        <h1>{workflow.name}</h1>
        <span class="muted mono" title={workflow.version}>
          {(workflow.version ?? "").slice(0, 12)}
        </span>
      </header>
      <dl class="facts inline">
        <div class="fact">
          <dt>Schedule</dt>
          <dd class="mono">{workflow.schedule || "none (manual)"}</dd>
        </div>
        <div class="fact">
          <dt>Deployed</dt>
          <dd>
            <Time value={workflow.updated_at} />
          </dd>
        </div>
        <div class="fact">
          <dt>First deployed</dt>
          <dd>
            <Time value={workflow.created_at} />
          </dd>
        </div>
      </dl>
      <div class="columns">
        <section aria-labelledby="start-title">
          <h2 id="start-title">Start a run</h2>
          {features && <StartForm workflow={workflow} features={features} />}
        </section>
        <section aria-labelledby="runs-title">
          <h2 id="runs-title">Recent runs</h2>
          <RunsTable runs={runs} now={now} showWorkflow={false} />
          <p>
            <Link href={href("/", { workflow: workflow.name })}>All runs of {workflow.name}</Link>
          </p>
        </section>
      </div>
      <section aria-labelledby="tasks-title">
        <h2 id="tasks-title">Tasks</h2>
        <div class="table-wrap">
          <table class="table">
            <thead>
              <tr>
                <th scope="col">Task</th>
                <th scope="col">Depends on</th>
                <th scope="col">Fan-out</th>
                <th scope="col">Runs</th>
                <th scope="col">Retries</th>
                <th scope="col">Timeout</th>
              </tr>
            </thead>
            <tbody>
              {(workflow.tasks ?? []).map((t) => (
                <tr key={t.name}>
                  <td>{t.name}</td>
                  <td>{(t.depends_on ?? []).join(", ")}</td>
                  <td class="mono">{t.parallel ?? ""}</td>
                  <td class="mono">
                    {t.executor === "workers" ? `handler ${t.handler ?? ""}` : (t.file ?? t.executor ?? "")}
                  </td>
                  <td>{t.retries ?? 0}</td>
                  <td>{t.timeout_seconds ? `${t.timeout_seconds} s` : ""}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </section>
      <section aria-labelledby="yaml-title">
        <h2 id="yaml-title">Definition (current version)</h2>
        <TextBlock text={workflow.definition_yaml ?? ""} label="Workflow YAML" />
      </section>
    </main>
  );
}

function StartForm({ workflow, features }: { workflow: Workflow; features: Features }) {
  const inputs: WorkflowInput[] = workflow.inputs ?? [];
  const [texts, setTexts] = useState<Record<string, string>>(() =>
    Object.fromEntries(inputs.map((i) => [i.name ?? "", initialText(i)])),
  );
  const [raw, setRaw] = useState("{}");
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const declared = features.inputs && inputs.length > 0;

  const submit = async (e: Event) => {
    e.preventDefault();
    let input: Json;
    if (declared) {
      const built = buildInput(inputs, texts);
      setErrors(built.errors);
      if (Object.keys(built.errors).length > 0) return;
      input = built.input;
    } else {
      try {
        input = JSON.parse(raw || "{}") as Json;
      } catch {
        setErrors({ "": "not valid JSON" });
        return;
      }
      setErrors({});
    }
    setBusy(true);
    setError(undefined);
    try {
      const run = await api.startRun(workflow.name ?? "", input);
      navigate(runHref(run.id));
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <form class="start-form" onSubmit={submit} aria-label={`Start a run of ${workflow.name}`}>
      {declared ? (
        inputs.map((field) => (
          <InputField
            key={field.name}
            field={field}
            texts={texts}
            setTexts={setTexts}
            error={errors[field.name ?? ""]}
          />
        ))
      ) : (
        <>
          {!features.inputs && (
            <NeedsNewerServer>
              This server does not describe workflow inputs, so the run input is given as JSON. Servers that read a
              workflow's <code>inputs:</code> get a form here.
            </NeedsNewerServer>
          )}
          {features.inputs && <p class="muted small">This workflow declares no inputs; any JSON object is accepted.</p>}
          <label class="field">
            Run input (JSON object)
            <textarea
              name="input"
              rows={4}
              value={raw}
              onInput={(e) => setRaw(e.currentTarget.value)}
              spellcheck={false}
            />
            {errors[""] && <span class="field-error">{errors[""]}</span>}
          </label>
        </>
      )}
      <ErrorNote error={error} />
      <button type="submit" class="primary" disabled={busy}>
        Start run
      </button>
    </form>
  );
}

function InputField({
  field,
  texts,
  setTexts,
  error,
}: {
  field: WorkflowInput;
  texts: Record<string, string>;
  setTexts: (f: (t: Record<string, string>) => Record<string, string>) => void;
  error: string | undefined;
}) {
  const name = field.name ?? "";
  const value = texts[name] ?? "";
  const set = (v: string) => setTexts((t) => ({ ...t, [name]: v }));
  const control = controlOf(field);
  const id = `input-${name}`;
  const label = (
    <>
      {name}
      {field.required && <span aria-hidden="true"> *</span>}
      {field.description && <span class="muted small"> {field.description}</span>}
    </>
  );
  if (control === "boolean") {
    return (
      <label class="field checkbox" for={id}>
        <input
          id={id}
          name={name}
          type="checkbox"
          checked={value === "true"}
          onChange={(e) => set(e.currentTarget.checked ? "true" : "false")}
        />
        {label}
      </label>
    );
  }
  return (
    <label class="field" for={id}>
      {label}
      {control === "choice" ? (
        <select
          id={id}
          name={name}
          value={value}
          required={field.required}
          onChange={(e) => set(e.currentTarget.value)}
        >
          {!field.required && <option value="">(default)</option>}
          {choicesOf(field).map((c) => (
            <option key={c} value={c}>
              {c}
            </option>
          ))}
        </select>
      ) : control === "json" ? (
        <textarea
          id={id}
          name={name}
          rows={3}
          value={value}
          spellcheck={false}
          onInput={(e) => set(e.currentTarget.value)}
        />
      ) : control === "text" ? (
        <input
          id={id}
          name={name}
          type="text"
          value={value}
          required={field.required}
          onInput={(e) => set(e.currentTarget.value)}
        />
      ) : (
        <input
          id={id}
          name={name}
          type="number"
          step={control === "integer" ? 1 : "any"}
          value={value}
          required={field.required}
          onInput={(e) => set(e.currentTarget.value)}
        />
      )}
      {error && <span class="field-error">{error}</span>}
    </label>
  );
}
