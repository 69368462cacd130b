/**
 * The Cloudflare Agents SDK peer (`bench/peers/cloudflare/`): installs its
 * pinned npm packages when they are missing (`npm ci` from the committed
 * lock file), starts it on workerd through `start.mjs`, and describes it as a
 * load target. Clients connect to the user worker's own workerd socket
 * (`direct_url`), the path a deployed worker serves from; wrangler's dev
 * proxy hop (`url`) is reported but not measured.
 *
 * @module
 */
import { Child } from "./child.ts";
import type { Target } from "./target.ts";

/** Where the peer lives. */
export const PEER_DIR = new URL("./peers/cloudflare/", import.meta.url).pathname;

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

async function npm(dir: string, args: string[]): Promise<{ ok: boolean; tail: string }> {
  const out = await new Deno.Command("npm", {
    args: [...args, "--no-audit", "--no-fund", "--loglevel=error"],
    cwd: dir,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(600_000),
  }).output();
  const tail = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-10).join("\n");
  return { ok: out.success, tail };
}

/**
 * Installs a directory's locked npm packages unless `marker` (a package) is
 * already there: `npm ci`, or, when `npm ci` refuses the lock file (a
 * registry that serves no other-platform optional packages, such as
 * workerd's macOS builds, makes npm call it out of sync), `npm install
 * --no-save`, which installs the same locked versions and leaves the lock
 * file alone.
 */
export async function ensureNpmInstalled(
  dir: string,
  marker: string,
  log: (line: string) => void,
): Promise<void> {
  if (await exists(`${dir}node_modules/${marker}/package.json`)) return;
  log(`installing the npm packages of ${dir} (npm ci)...`);
  const ci = await npm(dir, ["ci"]);
  if (ci.ok) return;
  log("npm ci refused the lock file; installing the locked versions with npm install --no-save");
  const install = await npm(dir, ["install", "--no-save"]);
  if (!install.ok) {
    throw new Error(`npm ci and npm install failed in ${dir}:\n${ci.tail}\n${install.tail}`);
  }
}

/** Installs the Cloudflare peer's locked packages (see {@linkcode ensureNpmInstalled}). */
export function ensurePeerInstalled(log: (line: string) => void): Promise<void> {
  return ensureNpmInstalled(PEER_DIR, "wrangler", log);
}

/** A running peer. */
export interface Peer {
  child: Child;
  /** One agent per client (the gateway's one session per socket). */
  target: Target;
  /** Every client on the same agent: the SDK's cheapest way to hold sockets. */
  sharedTarget: Target;
  /** wrangler's dev URL (through its ProxyWorker), for the record. */
  proxyUrl: string;
  /** Versions that ran. */
  versions: { agents: string; wrangler: string; workerd: string };
  /** Stops workerd and wrangler, and removes the private HOME. */
  stop(): Promise<void>;
}

async function packageVersion(name: string): Promise<string> {
  const text = await Deno.readTextFile(`${PEER_DIR}node_modules/${name}/package.json`);
  return JSON.parse(text).version;
}

/** Starts the peer against the stand-in; its state directory starts empty. */
export async function startPeer(upstreamUrl: string): Promise<Peer> {
  const home = await Deno.makeTempDir({ prefix: "bench-peer-home-" });
  const child = await Child.start({
    name: "cloudflare-peer",
    command: "node",
    args: [`${PEER_DIR}start.mjs`, "--upstream", upstreamUrl, "--max-seconds", "1800"],
    cwd: PEER_DIR,
    env: {
      HOME: home,
      XDG_CONFIG_HOME: `${home}/.config`,
      WRANGLER_SEND_METRICS: "false",
      CLOUDFLARE_CF_FETCH_ENABLED: "false",
      WRANGLER_LOG: "warn",
      NO_COLOR: "1",
    },
    readyTimeoutMs: 120_000,
  }).catch(async (err) => {
    await Deno.remove(home, { recursive: true }).catch(() => {});
    throw err;
  });
  const ready = child.ready as { url: string; direct_url: string | null; pids: number[] };
  const stop = async () => {
    await child.stop();
    await Deno.remove(home, { recursive: true }).catch(() => {});
  };
  if (!ready.direct_url) {
    await stop();
    throw new Error("the peer did not report its user worker's address");
  }
  if (ready.pids.length === 0) {
    await stop();
    throw new Error("no workerd process found under the peer");
  }
  const base = ready.direct_url.replace(/^http/, "ws").replace(/\/$/, "");
  return {
    child,
    proxyUrl: ready.url,
    target: {
      name: "Agents SDK peer",
      // One agent (Durable Object) per client, as one gateway session per socket.
      socketUrl: (i) => `${base}/agents/relay-agent/client-${i}`,
      pids: ready.pids,
      greets: true,
    },
    sharedTarget: {
      name: "Agents SDK peer, one shared agent",
      socketUrl: () => `${base}/agents/relay-agent/shared`,
      pids: ready.pids,
      greets: true,
    },
    versions: {
      agents: await packageVersion("agents"),
      wrangler: await packageVersion("wrangler"),
      workerd: await packageVersion("workerd"),
    },
    stop,
  };
}
