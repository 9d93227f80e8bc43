import assert from "node:assert/strict";
import { test } from "node:test";
import { buildInput, controlOf, initialText } from "./inputs";
import type { WorkflowInput } from "./types";

const inputs: WorkflowInput[] = [
  { name: "date", schema: { type: "string" }, required: true },
  { name: "limit", schema: { type: "integer" }, default_value: 10 },
  { name: "ratio", schema: { type: "number" } },
  { name: "dry_run", schema: { type: "boolean" }, default_value: true },
  { name: "mode", schema: { type: "string", enum: ["fast", "slow"] }, default_value: "fast" },
  { name: "tags", schema: { type: "array", items: { type: "string" } } },
];

test("each declared type gets its control and its default", () => {
  assert.deepEqual(inputs.map(controlOf), ["text", "integer", "number", "boolean", "choice", "json"]);
  assert.deepEqual(inputs.map(initialText), ["", "10", "", "true", "fast", ""]);
});

test("the run input holds what was typed, leaving empty optional fields to their defaults", () => {
  const { input, errors } = buildInput(inputs, {
    date: "2026-11-26",
    limit: "5",
    ratio: "",
    dry_run: "false",
    mode: "slow",
    tags: '["a"]',
  });
  assert.deepEqual(errors, {});
  assert.deepEqual(input, { date: "2026-11-26", limit: 5, dry_run: false, mode: "slow", tags: ["a"] });
});

test("each wrong field is named", () => {
  const { errors } = buildInput(inputs, { date: "", limit: "2.5", ratio: "x", tags: "[" });
  assert.deepEqual(errors, {
    date: "required",
    limit: "not a whole number",
    ratio: "not a number",
    tags: "not valid JSON",
  });
});
