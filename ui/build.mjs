// Builds the web UI into dist/ (committed, embedded by the server crate):
// one script and one stylesheet with stable names, and the page that loads
// them. `node build.mjs --check` builds into a temporary folder and fails
// when dist/ differs, which is how the test command catches a stale dist/.
// `node build.mjs --unit OUT` bundles the unit tests (src/**/*.test.ts) for
// `node --test`.
import { build } from "esbuild";
import { mkdtemp, readFile, readdir, rm, writeFile, mkdir, cp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);

async function buildApp(out) {
  await rm(out, { recursive: true, force: true });
  await mkdir(join(out, "assets"), { recursive: true });
  await build({
    entryPoints: { app: join(root, "src/main.tsx") },
    outdir: join(out, "assets"),
    bundle: true,
    minify: true,
    format: "esm",
    target: ["es2022", "chrome110", "firefox115", "safari16"],
    jsx: "automatic",
    jsxImportSource: "preact",
    legalComments: "none",
    charset: "utf8",
    logLevel: "warning",
  });
  await cp(join(root, "index.html"), join(out, "index.html"));
  await cp(join(root, "public"), out, { recursive: true });
}

async function files(dir, prefix = "") {
  const out = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const rel = join(prefix, entry.name);
    if (entry.isDirectory()) out.push(...(await files(join(dir, entry.name), rel)));
    else out.push(rel);
  }
  return out.sort();
}

async function check() {
  const tmp = await mkdtemp(join(tmpdir(), "ork-ui-"));
  try {
    await buildApp(tmp);
    const committed = join(root, "dist");
    const [want, have] = [await files(tmp), await files(committed).catch(() => [])];
    const stale = [];
    for (const f of new Set([...want, ...have])) {
      const a = await readFile(join(tmp, f)).catch(() => null);
      const b = await readFile(join(committed, f)).catch(() => null);
      if (!a || !b || !a.equals(b)) stale.push(f);
    }
    if (stale.length) {
      console.error(`ui/dist is stale (${stale.join(", ")}): run \`npm run build\` in ui/ and commit ui/dist`);
      process.exit(1);
    }
    console.log("ui/dist matches the sources");
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

async function unit(out) {
  const tests = (await files(join(root, "src"))).filter((f) => f.endsWith(".test.ts"));
  await rm(out, { recursive: true, force: true });
  await build({
    entryPoints: tests.map((f) => join(root, "src", f)),
    outdir: out,
    outbase: join(root, "src"),
    outExtension: { ".js": ".mjs" },
    bundle: true,
    platform: "node",
    format: "esm",
    jsx: "automatic",
    jsxImportSource: "preact",
    logLevel: "warning",
  });
}

if (args[0] === "--check") await check();
else if (args[0] === "--unit") await unit(args[1]);
else await buildApp(join(root, "dist"));
