import assert from "node:assert/strict";
import { test } from "node:test";
import { featuresOf, listRuns, setToken } from "./api";

test("a base server offers only the base routes", () => {
  const f = featuresOf({
    paths: {
      "/runs": { get: { parameters: [{ name: "workflow" }, { name: "limit" }] } },
      "/workflows/{name}": { get: {} },
    },
  });
  assert.deepEqual(f, {
    workers: false,
    inputs: false,
    watch: false,
    versions: false,
    runStatusFilter: false,
    runTriggerParam: "",
    runPageToken: false,
    runTimeFilter: false,
    runLabelFilter: false,
  });
});

test("newer routes and fields are detected from the OpenAPI document", () => {
  const f = featuresOf({
    paths: {
      "/workers": { get: {} },
      "/runs/{id}/watch": { get: {} },
      "/workflows/{name}": { get: { parameters: [{ name: "version" }] } },
      "/runs": {
        get: {
          parameters: [
            { name: "status" },
            { name: "trigger" },
            { name: "page_token" },
            { name: "created_after" },
            { name: "label" },
          ],
        },
      },
    },
    components: { schemas: { Workflow: { properties: { inputs: {} } } } },
  });
  assert.ok(Object.values(f).every(Boolean), JSON.stringify(f));
  assert.equal(f.runTriggerParam, "trigger");
});

/** Answers the API module's calls like a server with these routes would. */
function serve(openapi: object, runs: (url: URL) => object): URL[] {
  const calls: URL[] = [];
  globalThis.fetch = (async (input: string) => {
    const url = new URL(input, "http://ork.test");
    calls.push(url);
    const body = url.pathname === "/openapi.json" ? openapi : runs(url);
    return new Response(JSON.stringify(body), { status: 200, headers: { "content-type": "application/json" } });
  }) as typeof fetch;
  setToken(""); // forgets the features read from the previous server
  return calls;
}

const runsOf = (n: number, status = "success") =>
  Array.from({ length: n }, (_, i) => ({ id: `r${i}`, status, workflow: "w" }));

test("a limit-based server pages by asking for more, and status is filtered on the page", async () => {
  const calls = serve(
    { paths: { "/runs": { get: { parameters: [{ name: "workflow" }, { name: "limit" }] } } } },
    (url) => ({
      runs: [...runsOf(Number(url.searchParams.get("limit")) - 1), { id: "f", status: "failed" }],
    }),
  );
  const first = await listRuns({ workflow: "w", status: "failed" }, 50);
  assert.deepEqual(
    first.runs.map((r) => r.id),
    ["f"],
  );
  assert.deepEqual(first.next, { limit: 100 });
  assert.equal(first.replaces, true);
  const runsCall = calls.find((c) => c.pathname === "/runs")!;
  assert.equal(runsCall.searchParams.get("workflow"), "w");
  assert.equal(runsCall.searchParams.get("status"), null, "not sent to a server without the filter");
  const last = await listRuns({}, 50, { limit: 1000 });
  assert.equal(last.next, undefined, "1,000 is as far as such a server goes");
});

test("a keyset server pages with page tokens and filters by status itself", async () => {
  const calls = serve(
    {
      paths: {
        "/runs": {
          get: { parameters: [{ name: "workflow" }, { name: "status" }, { name: "limit" }, { name: "page_token" }] },
        },
      },
    },
    (url) =>
      url.searchParams.get("page_token")
        ? { runs: runsOf(3, "failed") }
        : { runs: runsOf(50, "failed"), next_page_token: "t1" },
  );
  const first = await listRuns({ status: "failed" }, 50);
  assert.equal(first.runs.length, 50);
  assert.deepEqual(first.next, { pageToken: "t1" });
  assert.equal(first.replaces, true);
  const second = await listRuns({ status: "failed" }, 50, first.next);
  assert.equal(second.runs.length, 3);
  assert.equal(second.next, undefined);
  assert.equal(second.replaces, false);
  const sent = calls.filter((c) => c.pathname === "/runs");
  assert.equal(sent[0]!.searchParams.get("status"), "failed");
  assert.equal(sent[1]!.searchParams.get("page_token"), "t1");
});

test("time and label filters go to servers that take them, and only to those", async () => {
  const params = ["workflow", "status", "triggered_by", "created_after", "label", "limit", "page_token"];
  let calls = serve({ paths: { "/runs": { get: { parameters: params.map((name) => ({ name })) } } } }, () => ({
    runs: [],
  }));
  const before = Date.now();
  await listRuns({ trigger: "schedule", since: "24h", label: "team=data" }, 50);
  let sent = calls.find((c) => c.pathname === "/runs")!;
  assert.equal(sent.searchParams.get("triggered_by"), "schedule");
  assert.equal(sent.searchParams.get("label"), "team=data");
  const after = Date.parse(sent.searchParams.get("created_after") ?? "");
  assert.ok(Math.abs(before - 86400e3 - after) < 60e3, `a day back: ${sent.searchParams.get("created_after")}`);

  calls = serve({ paths: { "/runs": { get: { parameters: [{ name: "workflow" }, { name: "limit" }] } } } }, () => ({
    runs: [],
  }));
  await listRuns({ since: "24h", label: "team=data" }, 50);
  sent = calls.find((c) => c.pathname === "/runs")!;
  assert.equal(sent.searchParams.get("created_after"), null);
  assert.equal(sent.searchParams.get("label"), null);
});
