import assert from "node:assert/strict";
import { test } from "node:test";
import { featuresOf } from "./api";

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
    runTriggerFilter: false,
    runPageToken: false,
  });
});

test("newer routes and fields are detected from the OpenAPI document", () => {
  const f = featuresOf({
    paths: {
      "/workers": { get: {} },
      "/runs/{id}/watch": { get: {} },
      "/workflows/{name}": { get: { parameters: [{ name: "version" }] } },
      "/runs": { get: { parameters: [{ name: "status" }, { name: "trigger" }, { name: "page_token" }] } },
    },
    components: { schemas: { Workflow: { properties: { inputs: {} } } } },
  });
  assert.ok(Object.values(f).every(Boolean), JSON.stringify(f));
});
