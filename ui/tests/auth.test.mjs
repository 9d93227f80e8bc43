// The web UI against a server that requires tokens (`ork dev
// --bootstrap-token-file`): the page itself loads without one, the API
// refuses, the UI asks for a token and says plainly when the one given is
// refused; with a good token every page loads and the live streams (run
// watch, log follow) carry it as a header, never in a URL.

import assert from "node:assert/strict";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Ork, launchBrowser, until } from "./harness.mjs";

let ork;
let browser;
let page;
const requests = [];
const pageErrors = [];

before(async () => {
  ork = await Ork.start({ auth: true });
  assert.ok(ork.token.startsWith("ork_"), "the server wrote its first admin token");
  await ork.deploy("ok", "chain");
  browser = await launchBrowser();
  page = await browser.context.newPage();
  page.on("request", (r) => requests.push({ url: r.url(), authorization: r.headers().authorization }));
  page.on("pageerror", (e) => pageErrors.push(e.message));
});

after(async () => {
  await browser?.close();
  await ork?.stop();
});

/** Creates a token with `role` through the CLI (as the admin); its secret. */
async function createToken(name, role) {
  const made = await ork.json(["token", "create", "--name", name, "--role", role]);
  assert.ok(made.secret?.startsWith("ork_"), JSON.stringify(made));
  return made.secret;
}

async function useToken(value) {
  if (!(await page.$('form[aria-label="API token"]'))) await page.click(`header >> button:text-is("Token")`);
  await page.fill('form[aria-label="API token"] input', value);
  await page.click("text=Use token");
}

describe("web UI on a server with tokens", () => {
  test("without a token the page loads and asks for one; a bad token is refused with the reason", async () => {
    const api = await fetch(`${ork.url}/runs`, { headers: { Accept: "application/json" } });
    assert.equal(api.status, 401, "the API needs a token");

    const response = await page.goto(`${ork.url}/`);
    assert.equal(response.status(), 200, "the UI's own files need none");
    assert.equal(new URL(page.url()).pathname, "/ui/");
    await page.waitForSelector('[data-auth-problem="missing"]');
    assert.match(await page.textContent('[data-auth-problem="missing"]'), /requires a token.*ork token create/);

    await useToken("ork_not-a-token-this-server-made");
    await page.waitForSelector('[data-auth-problem="refused"]');
    assert.match(await page.textContent('[data-auth-problem="refused"]'), /refused this token: unknown token/);
    await page.click("text=Forget token");
    assert.equal(await page.evaluate(() => sessionStorage.getItem("ork.token")), null);
  });

  test("with a good token every page loads, and the run page stays live", async () => {
    const done = await ork.json(["run", "start", "ui-ok", "--wait"]);
    const token = await createToken("ui-operator", "operator");
    await page.goto(`${ork.url}/ui/`);
    await page.waitForSelector('[data-auth-problem="missing"]');
    await useToken(token);
    await page.waitForSelector(`[data-run-row="${done.id}"][data-status="success"]`);
    assert.equal(await page.$("[data-auth-problem]"), null, "the prompt is gone");

    // A running chain: the watch stream moves the DAG, the log stream follows b.
    const gates = join(ork.dir, "gates");
    await mkdir(gates, { recursive: true });
    const run = await ork.json(["run", "start", "ui-chain", "--input", `gate=${gates}`]);
    await page.goto(`${ork.url}/ui/runs/${run.id}?task=b`);
    await page.waitForSelector('[data-live="live"]');
    await page.waitForSelector('.dag [data-task="a"][data-status="running"]');
    await writeFile(join(gates, "a"), "");
    await page.waitForSelector('.dag [data-task="b"][data-status="running"]', { timeout: 60_000 });
    await page.waitForSelector('[data-panel-task="b"] [data-log-state="following"]');
    await until("b's log lines", async () => /b waiting \d+/.test(await page.textContent("[data-log]")));

    // An operator may cancel.
    await page.click("text=Cancel run");
    await page.click("text=Confirm cancel");
    await page.waitForSelector('[data-run-status="cancelled"]', { timeout: 30_000 });
    assert.equal((await ork.status(run.id)).status, "cancelled");

    await page.goto(`${ork.url}/ui/workflows/ui-ok`);
    await page.waitForSelector('[data-workflow="ui-ok"]');
    await page.goto(`${ork.url}/ui/workers`);
    await page.waitForSelector("[data-workers-empty]");

    // Streams carried the token as a header; no URL ever held it.
    const streamed = (path) => requests.find((r) => new URL(r.url).pathname === path);
    assert.equal(streamed(`/runs/${run.id}/watch`)?.authorization, `Bearer ${token}`);
    assert.ok(
      requests.some((r) => r.url.includes("/logs?follow=true") && r.authorization === `Bearer ${token}`),
      "the log follow sent the token",
    );
    assert.deepEqual(
      requests.filter((r) => r.url.includes(token) || r.url.includes(encodeURIComponent(token))),
      [],
    );
  });

  test("a viewer token reads, and the page says why it may not cancel", async () => {
    const gates = join(ork.dir, "gates-viewer");
    await mkdir(gates, { recursive: true });
    const run = await ork.json(["run", "start", "ui-chain", "--input", `gate=${gates}`]);
    await page.click("text=Forget token");
    await useToken(await createToken("ui-viewer", "viewer"));
    await page.goto(`${ork.url}/ui/runs/${run.id}`);
    await page.waitForSelector('.dag [data-task="a"][data-status="running"]');
    await page.click("text=Cancel run");
    await page.click("text=Confirm cancel");
    await page.waitForSelector("text=/needs an operator or admin token/");
    assert.equal((await ork.status(run.id)).status, "running");
    const cancel = await ork.cli("run", "cancel", run.id);
    assert.equal(cancel.code, 0, cancel.stderr);
  });

  test("no page threw", () => {
    assert.deepEqual(pageErrors, []);
  });
});
