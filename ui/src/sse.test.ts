import assert from "node:assert/strict";
import { test } from "node:test";
import { SseParser } from "./sse";

test("events split across chunks and line endings", () => {
  const p = new SseParser();
  assert.deepEqual(p.push('event: lines\ndata: {"a"'), []);
  assert.deepEqual(p.push(":1}\n\n"), [{ event: "lines", data: '{"a":1}' }]);
  assert.deepEqual(p.push("event: end\r\ndata: {}\r"), []);
  assert.deepEqual(p.push("\n\r\n"), [{ event: "end", data: "{}" }]);
});

test("comments are keep-alives, ids are kept, multi-line data is joined", () => {
  const p = new SseParser();
  const events = p.push(": keep-alive\n\nid: 42\ndata: one\ndata: two\n\ndata:three\n\n");
  assert.deepEqual(events, [
    { event: "message", data: "one\ntwo", id: "42" },
    { event: "message", data: "three", id: "42" },
  ]);
});
