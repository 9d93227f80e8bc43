import assert from "node:assert/strict";
import { test } from "node:test";
import { applyWatch, formatDuration, groupStatus, groupTasks, mergeTasks, shapeKey } from "./model";
import type { Run, TaskRun } from "./types";

const t = (id: string, name: string, status: TaskRun["status"], index?: number): TaskRun =>
  index === undefined ? { id, name, status } : { id, name, status, parallel_index: index, parallel_count: 3 };

test("a fan-out of any size is one group with counts", () => {
  const tasks: TaskRun[] = [t("s", "source", "success")];
  for (let i = 0; i < 10_000; i++)
    tasks.push(t(`f${i}`, "fan", i < 9_000 ? "success" : i < 9_990 ? "pending" : "failed", i));
  const groups = groupTasks(tasks, {
    tasks: [{ name: "source" }, { name: "fan", depends_on: ["source"], parallel: "for_each: source.items" }],
  });
  assert.equal(groups.length, 2);
  const fan = groups[1]!;
  assert.equal(fan.fanOut, true);
  assert.equal(fan.instances.length, 10_000);
  assert.deepEqual(fan.counts, { success: 9_000, pending: 990, failed: 10 });
  assert.equal(fan.status, "running");
  assert.deepEqual(fan.dependsOn, ["source"]);
  assert.equal(shapeKey(groups), "source<|fan<source*");
});

test("a group runs while any instance is under way, then shows its worst outcome", () => {
  assert.equal(groupStatus({ success: 3 }), "success");
  assert.equal(groupStatus({ success: 2, running: 1 }), "running");
  assert.equal(groupStatus({ success: 2, failed: 1, running: 1 }), "running");
  assert.equal(groupStatus({ success: 2, failed: 1, pending: 5 }), "running");
  assert.equal(groupStatus({ pending: 5 }), "pending");
  assert.equal(groupStatus({ dispatched: 1, pending: 5 }), "dispatched");
  assert.equal(groupStatus({ success: 2, failed: 1, cancelled: 1 }), "failed");
  assert.equal(groupStatus({ success: 1, skipped: 1 }), "skipped");
  assert.equal(groupStatus({}), "pending");
});

test("tasks unknown to the workflow still get a node", () => {
  const groups = groupTasks([t("1", "a", "running")]);
  assert.equal(groups.length, 1);
  assert.equal(groups[0]!.status, "running");
});

test("the first watch message replaces the run; later ones merge by task id", () => {
  const run: Run = { id: "r", status: "running", tasks: [t("1", "a", "running"), t("2", "b", "pending")] };
  const first = applyWatch(undefined, { run }, true)!;
  assert.equal(first, run);
  // A whole run again.
  const whole = applyWatch(first, { run: { ...run, tasks: [t("1", "a", "success"), t("2", "b", "running")] } }, false)!;
  assert.deepEqual(
    whole.tasks!.map((x) => x.status),
    ["success", "running"],
  );
  // Only what changed, in the run or in another list of the message.
  const partial = applyWatch(whole, { run: { id: "r", status: "running", tasks: [t("2", "b", "success")] } }, false)!;
  assert.deepEqual(
    partial.tasks!.map((x) => `${x.name}:${x.status}`),
    ["a:success", "b:success"],
  );
  const other = applyWatch(partial, { changed_tasks: [t("1", "a", "failed")] }, false)!;
  assert.deepEqual(
    other.tasks!.map((x) => `${x.name}:${x.status}`),
    ["a:failed", "b:success"],
  );
  assert.equal(other.status, "running");
});

test("a fan-out's placeholder gives way to its instances", () => {
  const merged = mergeTasks(
    [t("s", "src", "running"), t("p", "fan", "pending")],
    [t("s", "src", "success"), t("i0", "fan", "pending", 0), t("i1", "fan", "pending", 1)],
  );
  assert.deepEqual(
    merged.map((x) => x.id),
    ["s", "i0", "i1"],
  );
});

test("durations read well", () => {
  assert.equal(formatDuration(undefined), "");
  assert.equal(formatDuration(850), "850 ms");
  assert.equal(formatDuration(12_345), "12.3 s");
  assert.equal(formatDuration(245_000), "4 m 05 s");
  assert.equal(formatDuration(7_380_000), "2 h 03 m");
  assert.equal(formatDuration(3 * 86_400_000 + 4 * 3_600_000), "3 d 04 h");
});
