// Attached pool workers (`GET /workers`): their handlers, slots in use,
// whether they are draining, and when each was last heard from.

import { useEffect, useState } from "preact/hooks";
import { api, serverFeatures, type Features } from "../api";
import { ErrorNote, NeedsNewerServer, Time } from "../components/bits";
import { useInterval, useTitle } from "../hooks";
import type { PoolWorker } from "../types";

export function WorkersPage() {
  useTitle("Workers");
  const [features, setFeatures] = useState<Features>();
  const [workers, setWorkers] = useState<PoolWorker[]>();
  const [error, setError] = useState<unknown>();

  useEffect(() => {
    serverFeatures().then(setFeatures, setError);
  }, []);

  useInterval(
    () => {
      if (!features?.workers) return;
      api.listWorkers().then(
        (w) => {
          setWorkers(w);
          setError(undefined);
        },
        (e) => setError(e),
      );
    },
    2000,
    [features?.workers],
  );

  return (
    <main id="main" class="page">
      <header class="page-head">
        <h1>Workers</h1>
      </header>
      <p class="muted">
        Long-lived pool workers attached to this server. Tasks with <code>executor: workers</code> go to a worker that
        serves their <code>handler</code>, within its free slots.
      </p>
      <ErrorNote error={error} />
      {features && !features.workers && (
        <NeedsNewerServer>
          This server does not list its pool workers (<code>GET /workers</code>). Pool workers still run tasks; a run's
          pending tasks say why they wait.
        </NeedsNewerServer>
      )}
      {features?.workers &&
        (!workers ? (
          !error && <p class="muted">Loading…</p>
        ) : workers.length === 0 ? (
          <p class="muted" data-workers-empty>
            No pool worker is attached.
          </p>
        ) : (
          <div class="table-wrap">
            <table class="table">
              <thead>
                <tr>
                  <th scope="col">Worker</th>
                  <th scope="col">Handlers</th>
                  <th scope="col">Slots in use</th>
                  <th scope="col">State</th>
                  <th scope="col">Attached</th>
                  <th scope="col">Last seen</th>
                  <th scope="col">Server</th>
                </tr>
              </thead>
              <tbody>
                {workers.map((w) => (
                  <tr key={w.session_id} data-worker={w.name}>
                    <td>{w.name}</td>
                    <td>{(w.handlers ?? []).join(", ")}</td>
                    <td>
                      <meter min={0} max={w.slots ?? 0} value={w.slots_in_use ?? 0} aria-hidden="true" />{" "}
                      {w.slots_in_use ?? 0} / {w.slots ?? 0}
                    </td>
                    <td>{w.draining ? "draining" : "serving"}</td>
                    <td>
                      <Time value={w.attached_at} />
                    </td>
                    <td>
                      <Time value={w.last_seen_at} />
                    </td>
                    <td class="mono">{w.server}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        ))}
    </main>
  );
}
