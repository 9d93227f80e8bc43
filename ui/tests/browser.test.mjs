// The web UI in a real browser against a real `ork dev`: the runs list, the
// live DAG of a running chain, the log pane following a task, cancel and
// retry-from-task checked through the CLI, a 1,000-instance fan-out drawn
// as one node, and task-controlled markup shown as text.

import assert from "node:assert/strict";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Ork, launchBrowser, until } from "./harness.mjs";

let ork;
let browser;
let page;
const pageErrors = [];
const policyViolations = [];

before(async () => {
  ork = await Ork.start();
  await ork.deploy("ok", "fails", "chain", "xss", "fanout", "inputs", "pool");
  browser = await launchBrowser();
  page = await browser.context.newPage();
  page.on("pageerror", (e) => {
    console.error("page error:", e.message);
    pageErrors.push(e.message);
  });
  page.on("console", (m) => {
    if (/Content.Security.Policy/i.test(m.text())) policyViolations.push(m.text());
  });
});

after(async () => {
  await browser?.close();
  await ork?.stop();
});

/** The statuses of the DAG's nodes, by task. */
function nodeStatuses() {
  return page.$$eval(".dag .node", (nodes) =>
    Object.fromEntries(nodes.map((n) => [n.getAttribute("data-task"), n.getAttribute("data-status")])),
  );
}

async function waitForNodes(expected, what) {
  await until(
    what,
    async () => {
      const have = await nodeStatuses();
      return Object.entries(expected).every(([task, status]) => have[task] === status) ? have : null;
    },
    60_000,
  );
}

describe("web UI", () => {
  test("GET / sends browsers to the UI and leaves API clients alone", async () => {
    const response = await page.goto(`${ork.url}/`);
    assert.equal(new URL(page.url()).pathname, "/ui/");
    const csp = response.headers()["content-security-policy"];
    assert.match(csp, /script-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline/);
    const api = await fetch(`${ork.url}/`, { headers: { Accept: "application/json" }, redirect: "manual" });
    assert.equal(api.status, 404);
    assert.equal((await api.json()).code, "NOT_FOUND");
  });

  test("the runs list shows a failed and a successful run", async () => {
    const ok = await ork.json(["run", "start", "ui-ok", "--wait"]);
    const failed = await ork.json(["run", "start", "ui-fails", "--wait"], true);
    assert.equal(ok.status, "success");
    assert.equal(failed.status, "failed");
    await page.goto(`${ork.url}/ui/`);
    await page.waitForSelector(`[data-run-row="${ok.id}"][data-status="success"]`);
    await page.waitForSelector(`[data-run-row="${failed.id}"][data-status="failed"]`);
    const row = await page.textContent(`[data-run-row="${failed.id}"]`);
    assert.match(row, /ui-fails/);
    assert.match(row, /manual/);
    // Timestamps: the viewer's zone, UTC on hover.
    const title = await page.getAttribute(`[data-run-row="${ok.id}"] time`, "title");
    assert.match(title, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ UTC$/);

    // The status filter.
    await page.selectOption('select[name="status"]', "failed");
    await until("only failed runs", async () => {
      const statuses = await page.$$eval("[data-run-row]", (rows) => rows.map((r) => r.getAttribute("data-status")));
      return statuses.length > 0 && statuses.every((s) => s === "failed");
    });
    assert.ok(await page.$(`[data-run-row="${failed.id}"]`));
    assert.match(page.url(), /status=failed/);

    // A new run appears without a reload.
    await page.selectOption('select[name="status"]', "");
    await page.evaluate(() => (window.__kept = "same page"));
    const again = await ork.json(["run", "start", "ui-ok", "--wait"]);
    await page.waitForSelector(`[data-run-row="${again.id}"][data-status="success"]`, { timeout: 30_000 });
    assert.equal(await page.evaluate(() => window.__kept), "same page");
  });

  test("the run page follows a running chain live; logs, keyboard, cancel and retry from a task", async () => {
    const gates = join(ork.dir, "gates");
    await mkdir(gates, { recursive: true });
    const run = await ork.json(["run", "start", "ui-chain", "--input", `gate=${gates}`]);
    await page.goto(`${ork.url}/ui/runs/${run.id}`);
    await waitForNodes({ a: "running", b: "pending", c: "pending" }, "a running, b and c pending");
    // The edges come from the workflow version the run used (read after the run).
    await until("the edges a → b → c", async () => (await page.$$eval(".dag .edge", (e) => e.length)) === 2);
    await page.evaluate(() => (window.__kept = "same page"));

    // Why pending: b waits on a, in the server's words.
    await page.click('[data-task="b"]');
    const reason = (await ork.status(run.id)).tasks.find((t) => t.name === "b").pending_reason;
    assert.match(reason, /\ba\b/);
    assert.equal(await page.textContent("[data-why-pending]"), `Why pending: ${reason}`);

    // The chain advances: the page follows without a reload.
    await writeFile(join(gates, "a"), "");
    await waitForNodes({ a: "success", b: "running", c: "pending" }, "a done, b running");
    assert.equal(await page.evaluate(() => window.__kept), "same page");

    // The log pane follows b while it runs.
    await page.waitForSelector('[data-panel-task="b"] [data-log-state="following"]');
    const count = () => page.$$eval('[data-panel-task="b"] [data-log] .log-line', (l) => l.length);
    const first = await until("b's first log lines", async () => ((await count()) > 0 ? count() : 0));
    await until("more log lines while b runs", async () => (await count()) > first + 3);
    assert.match(await page.textContent("[data-log]"), /b waiting \d+/);

    // Keyboard: from a, the right arrow reaches b; Enter selects it.
    await page.focus('[data-task="a"]');
    await page.keyboard.press("ArrowRight");
    assert.equal(await page.evaluate(() => document.activeElement?.getAttribute("data-task")), "b");
    await page.keyboard.press("Enter");
    await until("a deselected", async () => !(await page.$('[data-panel-task="b"]')));
    await page.keyboard.press("Enter");
    await page.waitForSelector('[data-panel-task="b"]');

    await writeFile(join(gates, "b"), "");
    await waitForNodes({ b: "success", c: "running" }, "b done, c running");

    // Cancel from the UI; the CLI agrees.
    await page.click("text=Cancel run");
    await page.click("text=Confirm cancel");
    await page.waitForSelector('[data-run-status="cancelled"]', { timeout: 30_000 });
    const cancelled = await until("the CLI to show the run cancelled", async () => {
      const s = await ork.status(run.id);
      return s.status === "cancelled" ? s : null;
    });
    assert.equal(cancelled.tasks.find((t) => t.name === "c").status, "cancelled");

    // Retry from b: b and c run again (b's gate is open, c's is not).
    // (b is still the selected task.)
    await page.click('[data-panel-task="b"] >> text=Retry from this task');
    const retried = await until("the CLI to show b's second attempt and c running", async () => {
      const s = await ork.status(run.id);
      const b = s.tasks.find((t) => t.name === "b");
      const c = s.tasks.find((t) => t.name === "c");
      return b.attempt >= 2 && b.status === "success" && c.status === "running" ? s : null;
    });
    assert.equal(retried.tasks.find((t) => t.name === "a").attempt, 1, "a kept its output");
    await waitForNodes({ a: "success", b: "success", c: "running" }, "the retried run live on the page");
    assert.equal(await page.evaluate(() => window.__kept), "same page");

    await writeFile(join(gates, "c"), "");
    await page.waitForSelector('[data-run-status="success"]', { timeout: 60_000 });
    assert.equal((await ork.status(run.id)).status, "success");
  });

  test("a 1,000-instance fan-out renders as one node with its counts", async () => {
    const run = await ork.json(["run", "start", "ui-fanout"]);
    const started = Date.now();
    await page.goto(`${ork.url}/ui/runs/${run.id}`);
    await page.waitForSelector('[data-task="items"][data-total="1000"]');
    const wall = Date.now() - started;
    const sinceNavigation = await page.evaluate(() => Math.round(performance.now()));
    console.log(
      `fan-out of 1,000 instances rendered as one node: ${sinceNavigation} ms after navigation (${wall} ms wall, load included)`,
    );

    assert.equal(await page.$$eval(".dag .node", (n) => n.length), 1);
    assert.ok((await page.$$eval(".dag rect", (r) => r.length)) < 20, "no box per instance");
    const counts = await page.getAttribute('[data-task="items"]', "data-counts");
    const total = counts.split(",").reduce((sum, part) => sum + Number(part.split(":")[1]), 0);
    assert.equal(total, 1000, counts);
    assert.match(await page.textContent('[data-task="items"]'), /1,000 instances/);

    // Expanded: a page of instances, not a thousand rows.
    await page.click('[data-task="items"]');
    await page.waitForSelector(".instances tbody tr");
    assert.equal(await page.$$eval(".instances tbody tr", (r) => r.length), 25);
    assert.match(await page.textContent(".pager"), /1–25 of 1,000/);
    await page.click(".instances tbody tr:nth-child(3) button");
    const third = (await ork.status(run.id)).tasks.find((t) => t.name === "items" && t.parallel_index === 2);
    assert.ok(third.pending_reason, "the server says why");
    assert.equal(await page.textContent("[data-why-pending]"), `Why pending: ${third.pending_reason}`);

    const cancel = await ork.cli("run", "cancel", run.id);
    assert.equal(cancel.code, 0, cancel.stderr);
  });

  test("task output, logs and errors containing markup are shown as text", async () => {
    const run = await ork.json(["run", "start", "ui-xss", "--wait"]);
    await page.goto(`${ork.url}/ui/runs/${run.id}?task=evil`);
    await page.waitForSelector("[data-output] pre");
    assert.match(await page.textContent("[data-output]"), /<script>window.__ork_pwned = 1<\/script>/);
    await until("the log line", async () => /log: <script>/.test(await page.textContent("[data-log]")));
    assert.equal(await page.evaluate(() => window.__ork_pwned), undefined);
    assert.equal(await page.$$eval('img[src="x"]', (i) => i.length), 0);
    assert.equal(await page.$$eval("script:not([src])", (s) => s.length), 0);
  });

  test("workflows page shows the YAML and starts a run", async () => {
    await page.goto(`${ork.url}/ui/workflows`);
    await page.waitForSelector('[data-workflow-row="ui-ok"]');
    await page.click('[data-workflow-row="ui-ok"] a');
    await page.waitForSelector('[data-workflow="ui-ok"]');
    assert.match(await page.textContent('[aria-label="Workflow YAML"]'), /name: ui-ok/);
    assert.match(await page.textContent(".start-form"), /declares no inputs/);
    await page.click("text=Start run");
    await page.waitForSelector('[data-run-status="success"]', { timeout: 30_000 });
    const id = await page.getAttribute("[data-run]", "data-run");
    assert.equal((await ork.status(id)).status, "success");
  });

  test("the start-run form is built from the workflow's declared inputs", async () => {
    await page.goto(`${ork.url}/ui/workflows/ui-inputs`);
    const form = '[aria-label="Start a run of ui-inputs"]';
    await page.waitForSelector(form);
    // One control per declared field, of its type, holding its default.
    assert.equal(await page.getAttribute(`${form} input[name="who"]`, "type"), "text");
    assert.equal(await page.getAttribute(`${form} input[name="who"]`, "required"), "");
    assert.equal(await page.inputValue(`${form} input[name="times"]`), "2");
    assert.equal(await page.getAttribute(`${form} input[name="times"]`, "type"), "number");
    assert.equal(await page.isChecked(`${form} input[name="loud"]`), false);
    assert.equal(await page.inputValue(`${form} select[name="mood"]`), "calm");
    assert.match(await page.textContent(form), /Whom to greet/);

    // What the server refuses is shown with its reason, naming the field.
    await page.fill(`${form} input[name="who"]`, "x");
    await page.click(`${form} >> text=Start run`);
    await page.waitForSelector(`${form} [role="alert"]`);
    assert.match(await page.textContent(`${form} [role="alert"]`), /input\.who/);

    await page.fill(`${form} input[name="who"]`, "<b>world</b>");
    await page.fill(`${form} input[name="times"]`, "3");
    await page.check(`${form} input[name="loud"]`);
    await page.selectOption(`${form} select[name="mood"]`, "cheerful");
    await page.click(`${form} >> text=Start run`);
    await page.waitForSelector('[data-run-status="success"]', { timeout: 30_000 });
    const id = await page.getAttribute("[data-run]", "data-run");
    const run = await ork.status(id);
    assert.deepEqual(run.input, { who: "<b>world</b>", times: 3, loud: true, mood: "cheerful" });
    assert.deepEqual(run.tasks.find((t) => t.name === "greet").output, run.input);
  });

  test("pool workers: why a task waits for one, the workers page, the task run by one", async () => {
    await page.goto(`${ork.url}/ui/workers`);
    await page.waitForSelector("[data-workers-empty]");

    const run = await ork.json(["run", "start", "ui-pool"]);
    await page.goto(`${ork.url}/ui/runs/${run.id}?task=square`);
    const reason = await until("the server to say why square waits", async () => {
      const task = (await ork.status(run.id)).tasks.find((t) => t.name === "square");
      return /ui_square/.test(task?.pending_reason ?? "") ? task.pending_reason : null;
    });
    assert.match(reason, /no attached worker serves handler `ui_square`/);
    await until(
      "the why-pending text on the page",
      async () => (await page.textContent("[data-why-pending]")) === `Why pending: ${reason}`,
    );

    const worker = ork.startPoolWorker();
    try {
      // The run page follows the task to its end once a worker serves it.
      await page.waitForSelector('[data-run-status="success"]', { timeout: 60_000 }).catch((e) => {
        throw new Error(`${e.message}\nworker log:\n${worker.log()}`);
      });
      assert.deepEqual((await ork.status(run.id)).tasks[0].output, { square: 49 });

      await page.goto(`${ork.url}/ui/workers`);
      const row = '[data-worker="ui-test-worker"]';
      await page.waitForSelector(row);
      const text = await page.textContent(row);
      assert.match(text, /ui_square/);
      assert.match(text, /0 \/ 2/);
      assert.match(text, /serving/);
      const cli = await ork.json(["worker", "list"]);
      assert.deepEqual(
        cli.map((w) => w.name),
        ["ui-test-worker"],
      );
    } finally {
      await worker.stop();
    }
    // The list follows workers leaving without a reload.
    await page.waitForSelector("[data-workers-empty]", { timeout: 30_000 });
  });

  test("a token given in the UI is sent as a Bearer header, streams included", async () => {
    const run = await ork.json(["run", "start", "ui-ok", "--wait"]);
    await page.goto(`${ork.url}/ui/`);
    await page.click("button:has-text('Token')");
    await page.fill('form[aria-label="API token"] input', "ork-test-token");
    const listed = page.waitForRequest(
      (r) => new URL(r.url()).pathname === "/runs" && r.headers().authorization === "Bearer ork-test-token",
    );
    await page.click("text=Use token");
    await listed;
    // Kept for the tab across a reload, and sent on the log stream too.
    const followed = page.waitForRequest(
      (r) => r.url().includes("/logs?follow=true") && r.headers().authorization === "Bearer ork-test-token",
    );
    await page.goto(`${ork.url}/ui/runs/${run.id}?task=hello`);
    await followed;
    assert.equal(await page.evaluate(() => sessionStorage.getItem("ork.token")), "ork-test-token");
    await page.click("text=Forget token");
    assert.equal(await page.evaluate(() => sessionStorage.getItem("ork.token")), null);
  });

  test("readable on a narrow window and in dark mode", async () => {
    const run = await ork.json(["run", "start", "ui-ok", "--wait"]);
    await page.setViewportSize({ width: 390, height: 800 });
    await page.goto(`${ork.url}/ui/runs/${run.id}?task=hello`);
    await page.waitForSelector("[data-output] pre");
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `the page scrolls sideways by ${overflow}px`);
    const background = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    await page.emulateMedia({ colorScheme: "light" });
    const light = await background();
    await page.emulateMedia({ colorScheme: "dark" });
    assert.notEqual(await background(), light);
    await page.emulateMedia({ colorScheme: "light" });
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  test("no page broke its Content-Security-Policy or threw", () => {
    assert.deepEqual(policyViolations, []);
    assert.deepEqual(pageErrors, []);
  });
});
