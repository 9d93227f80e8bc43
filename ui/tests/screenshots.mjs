// Writes the README's screenshots of the web UI (docs/ui-*.png) from a real
// `ork dev` running the workflows of ui/tests/workflows:
//
//   cd ui && npm run screenshots
//
// Not a test: run it by hand after changing how the pages look.

import { join } from "node:path";
import { Ork, REPO, launchBrowser, until } from "./harness.mjs";

const out = (name) => join(REPO, "docs", `ui-${name}.png`);

const ork = await Ork.start();
const browser = await launchBrowser();
try {
  await ork.deploy("ok", "fails", "demo", "chain");
  await ork.json(["run", "start", "ui-ok", "--wait"]);
  await ork.json(["run", "start", "ui-fails", "--wait"], true);
  const finished = await ork.json(["run", "start", "nightly-etl", "--wait"], true);
  await ork.json(["run", "start", "ui-ok", "--wait"]);
  const running = await ork.json(["run", "start", "nightly-etl"]);
  await until(
    "the fan-out to be about a third done",
    async () => {
      const run = await ork.status(running.id);
      const done = run.tasks.filter((t) => t.name === "transform" && t.status === "success").length;
      return done >= 40;
    },
    120_000,
  );

  const page = await browser.context.newPage();
  await page.emulateMedia({ colorScheme: "light" });

  await page.goto(`${ork.url}/ui/`);
  await page.waitForSelector(`[data-run-row="${running.id}"]`);
  await page.screenshot({ path: out("runs") });

  const transform = await ork.status(running.id);
  const busy = transform.tasks.find((t) => t.name === "transform" && t.status === "running");
  await page.goto(`${ork.url}/ui/runs/${running.id}?task=transform&index=${busy?.parallel_index ?? 0}`);
  await page.waitForSelector('[data-task="transform"]');
  await page.waitForSelector("[data-log] .log-line");
  await page.screenshot({ path: out("run") });

  await page.emulateMedia({ colorScheme: "dark" });
  await page.goto(`${ork.url}/ui/runs/${finished.id}?task=transform&index=17`);
  await page.waitForSelector("[data-log] .log-line");
  await page.screenshot({ path: out("run-dark") });

  await page.emulateMedia({ colorScheme: "light" });
  await page.goto(`${ork.url}/ui/workflows/nightly-etl`);
  await page.waitForSelector('[aria-label="Workflow YAML"]');
  await page.screenshot({ path: out("workflow") });

  await ork.cli("run", "cancel", running.id);
  console.log("wrote docs/ui-runs.png, ui-run.png, ui-run-dark.png, ui-workflow.png");
} finally {
  await browser.close();
  await ork.stop();
}
