// What the browser tests share: a real `ork dev` on an ephemeral port in a
// temporary folder, the `ork` CLI pointed at it, and Debian's Chromium
// driven by playwright-core (no browser is ever downloaded).

import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(here, "../..");
export const WORKFLOWS = join(here, "workflows");
/** The folder with `ork` and `ork-worker` (`cargo build --workspace --bins`). */
export const BIN_DIR = process.env.ORK_BIN_DIR ?? join(REPO, "target", "debug");
export const ORK = join(BIN_DIR, "ork");
export const CHROMIUM = process.env.ORK_CHROMIUM ?? "/usr/bin/chromium";
/** A Python that imports the `ork` SDK (scripts/test-ui.sh provides one). */
export const PYTHON = process.env.ORK_UI_PYTHON ?? "python3";

/** Waits for `check` to return a truthy value, polling, up to `ms`. */
export async function until(what, check, ms = 30_000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function run(file, args, options = {}) {
  return new Promise((resolvePromise) => {
    execFile(file, args, { maxBuffer: 64 << 20, ...options }, (error, stdout, stderr) => {
      resolvePromise({ code: error ? (error.code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** A running `ork dev` with its own data folder. */
export class Ork {
  /** `auth`: require tokens (`--bootstrap-token-file`); the CLI then uses
   * the first admin token, `this.token`. */
  static async start({ auth = false } = {}) {
    const dir = await mkdtemp(join(tmpdir(), "ork-ui-test-"));
    const tokenFile = join(dir, "admin.token");
    const args = ["dev", "--listen", "127.0.0.1:0", "--data-dir", join(dir, "data")];
    if (auth) args.push("--bootstrap-token-file", tokenFile);
    const child = spawn(ORK, args, {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, NO_COLOR: "1" },
    });
    let log = "";
    const url = await new Promise((ok, fail) => {
      const timer = setTimeout(() => fail(new Error(`ork dev did not start:\n${log}`)), 60_000);
      child.stderr.setEncoding("utf8");
      child.stderr.on("data", (chunk) => {
        log += chunk;
        const m = /listening on (http:\/\/[0-9.:]+)/.exec(log);
        if (m) {
          clearTimeout(timer);
          ok(m[1]);
        }
      });
      child.on("exit", (code) => {
        clearTimeout(timer);
        fail(new Error(`ork dev exited with ${code}:\n${log}`));
      });
    });
    // Keep draining stderr so the server never blocks on a full pipe.
    child.stderr.on("data", () => undefined);
    const ork = new Ork(child, url, dir);
    if (auth) {
      ork.token = await until(
        "the first admin token",
        async () => (await readFile(tokenFile, "utf8").catch(() => "")).trim(),
        30_000,
      );
    }
    return ork;
  }

  constructor(child, url, dir) {
    this.child = child;
    this.url = url;
    this.dir = dir;
    /** The admin token the CLI sends, on a server with tokens. */
    this.token = "";
  }

  env() {
    const env = { ...process.env, NO_COLOR: "1" };
    delete env.ORK_TOKEN;
    if (this.token) env.ORK_TOKEN = this.token;
    return env;
  }

  /** Runs `ork ARGS` against this server; resolves with code and output. */
  cli(...args) {
    return run(ORK, ["--server", this.url, ...args], { env: this.env() });
  }

  /** `ork -o json ARGS`, parsed; fails on a non-zero exit unless `allowFail`. */
  async json(args, allowFail = false) {
    const r = await this.cli("-o", "json", ...args);
    if (r.code !== 0 && !allowFail) throw new Error(`ork ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
    return JSON.parse(r.stdout);
  }

  async deploy(...names) {
    for (const name of names) {
      const r = await this.cli("workflow", "deploy", join(WORKFLOWS, `${name}.yaml`));
      if (r.code !== 0) throw new Error(`deploy ${name}: ${r.stderr}`);
    }
  }

  /** `ork run status ID -o json`: what the CLI says of a run. */
  status(id) {
    return this.json(["run", "status", id]);
  }

  /** Attaches the pool worker of `workflows/pool_worker.py` (handler
   * `ui_square`) to this server; `stop()` it when done. */
  startPoolWorker() {
    const child = spawn(PYTHON, [join(WORKFLOWS, "pool_worker.py")], {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...this.env(), ORK_SERVER: this.url },
    });
    let log = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => (log += chunk));
    return {
      log: () => log,
      stop: () => stopChild(child),
    };
  }

  async stop() {
    await stopChild(this.child);
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** SIGTERM, then SIGKILL after 20 s; resolves once the child has exited. */
async function stopChild(child) {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = once(child, "exit");
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    await exited;
    clearTimeout(timer);
  }
}

/** Debian's Chromium with a fresh profile, headless, talking to nothing
 * but the test server. */
export async function launchBrowser(options = {}) {
  const profile = await mkdtemp(join(tmpdir(), "ork-ui-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1280, height: 800 },
    ...options,
  });
  return {
    context,
    async close() {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}
