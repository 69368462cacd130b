/**
 * Starts the Agents SDK peer on loopback through wrangler's programmatic
 * `unstable_startWorker` (plain `wrangler dev` leaks through its debugger
 * channel under streaming loads), prints one JSON line
 * `{"url","direct_url","pids"}` on stdout, and runs until stdin closes, a
 * SIGTERM arrives, or `--max-seconds` pass — whichever comes first.
 *
 * - `url` is wrangler's dev URL: its ProxyWorker (a Durable Object in a second
 *   workerd) forwards every request to the user worker.
 * - `direct_url` is the user worker's own workerd socket, without that hop:
 *   the path a deployed worker serves from.
 * - `pids` are the workerd processes, for the bench to read their memory and CPU.
 *
 * Usage: node start.mjs --upstream http://127.0.0.1:PORT/api/v1 [--max-seconds 900]
 * The bench sets WRANGLER_SEND_METRICS=false, CLOUDFLARE_CF_FETCH_ENABLED=false
 * and a private HOME before starting it.
 */
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const upstream = arg("--upstream");
const maxSeconds = Number(arg("--max-seconds", "900"));
if (!upstream) {
  console.error("usage: node start.mjs --upstream URL [--max-seconds N]");
  process.exit(2);
}

// Every run starts from empty Durable Object storage.
rmSync(join(here, ".wrangler", "state"), { recursive: true, force: true });

/** The workerd processes this node process started (children, any depth). */
function workerdPids() {
  const parentOf = new Map();
  const names = new Map();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const close = stat.lastIndexOf(")");
      names.set(Number(entry), stat.slice(stat.indexOf("(") + 1, close));
      parentOf.set(Number(entry), Number(stat.slice(close + 2).split(" ")[1]));
    } catch {
      // The process ended while we looked.
    }
  }
  const isOurs = (pid) => {
    for (let p = parentOf.get(pid); p !== undefined && p > 1; p = parentOf.get(p)) {
      if (p === process.pid) return true;
    }
    return false;
  };
  return [...names].filter(([pid, name]) => name.startsWith("workerd") && isOurs(pid))
    .map(([pid]) => pid);
}

const { unstable_startWorker } = await import("wrangler");

const worker = await unstable_startWorker({
  config: join(here, "wrangler.jsonc"),
  bindings: { UPSTREAM_URL: { type: "plain_text", value: upstream } },
  build: { nodejsCompatMode: "v2" },
  dev: {
    server: { hostname: "127.0.0.1", port: 0 },
    inspector: false,
    watch: false,
    liveReload: false,
    persist: join(here, ".wrangler", "state"),
    logLevel: "warn",
  },
});
// The user worker's own address arrives with the first reloadComplete event,
// which may come after `ready` resolves.
const direct = new Promise((resolve) => {
  worker.raw.on("reloadComplete", (e) => {
    const u = e.proxyData?.userWorkerUrl;
    if (u) resolve(`${u.protocol}//${u.hostname}:${u.port}/`);
  });
  setTimeout(() => resolve(null), 30_000).unref();
});
await worker.ready;
const url = await worker.url;
const directUrl = await direct;

let stopping = false;
async function stop(code) {
  if (stopping) return;
  stopping = true;
  const hard = setTimeout(() => process.exit(code), 10_000);
  hard.unref();
  try {
    await worker.dispose();
  } finally {
    process.exit(code);
  }
}
process.on("SIGTERM", () => stop(0));
process.on("SIGINT", () => stop(0));
process.stdin.on("end", () => stop(0));
process.stdin.on("close", () => stop(0));
process.stdin.resume();
setTimeout(() => stop(0), maxSeconds * 1000).unref();

process.stdout.write(
  JSON.stringify({ url: url.href, direct_url: directUrl, pids: workerdPids() }) +
    "\n",
);
