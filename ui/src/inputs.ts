// The start-run form's logic, pure: which control each declared input gets
// (from its JSON-Schema-style type), and the run input built from what was
// typed, with an error naming each field that is wrong.

import type { Json, WorkflowInput } from "./types";

export type Control = "text" | "number" | "integer" | "boolean" | "choice" | "json";

interface Schema {
  type?: string | string[];
  enum?: Json[];
}

export function controlOf(input: WorkflowInput): Control {
  const schema = (input.schema ?? {}) as Schema;
  if (Array.isArray(schema.enum) && schema.enum.every((v) => typeof v === "string")) return "choice";
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") : schema.type;
  switch (type) {
    case "string":
      return "text";
    case "number":
      return "number";
    case "integer":
      return "integer";
    case "boolean":
      return "boolean";
    case undefined:
      return "json";
    default:
      return "json";
  }
}

export function choicesOf(input: WorkflowInput): string[] {
  const schema = (input.schema ?? {}) as Schema;
  return (schema.enum ?? []).filter((v): v is string => typeof v === "string");
}

/** The text a control starts with: the declared default, if any. */
export function initialText(input: WorkflowInput): string {
  const d = input.default_value;
  if (d === undefined || d === null) return "";
  const control = controlOf(input);
  if (control === "json") return JSON.stringify(d, null, 2);
  if (control === "boolean") return d === true ? "true" : "false";
  return String(d);
}

/** The run input from the form's texts. A field left empty is left out, so
 * the server applies its default (or names it when it is required). */
export function buildInput(
  inputs: WorkflowInput[],
  texts: Record<string, string>,
): { input: Record<string, Json>; errors: Record<string, string> } {
  const input: Record<string, Json> = {};
  const errors: Record<string, string> = {};
  for (const field of inputs) {
    const name = field.name ?? "";
    const text = (texts[name] ?? "").trim();
    const control = controlOf(field);
    if (control === "boolean") {
      input[name] = text === "true";
      continue;
    }
    if (text === "") {
      if (field.required) errors[name] = "required";
      continue;
    }
    switch (control) {
      case "text":
      case "choice":
        input[name] = texts[name] ?? "";
        break;
      case "number":
      case "integer": {
        const n = Number(text);
        if (!Number.isFinite(n)) errors[name] = "not a number";
        else if (control === "integer" && !Number.isInteger(n)) errors[name] = "not a whole number";
        else input[name] = n;
        break;
      }
      case "json":
        try {
          input[name] = JSON.parse(text) as Json;
        } catch {
          errors[name] = "not valid JSON";
        }
        break;
    }
  }
  return { input, errors };
}
