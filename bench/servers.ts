/**
 * Starting the processes under measurement: the stand-in, the gateway, the
 * bare echo server and the floor relays, each a process of its own on
 * 127.0.0.1 with a free port.
 *
 * @module
 */
import { Child } from "./child.ts";
import type { Target } from "./target.ts";

/** The project root: subprocesses run there so that deno.json's import map applies. */
export const ROOT = new URL("..", import.meta.url).pathname;
const here = (file: string) => new URL(file, import.meta.url).pathname;

/** How every child may live at most, so that none outlives a run. */
const MAX_SECONDS = "1800";

/** The fixed answer every background question gets. */
export interface Answer {
  tokens: number;
  gapMs: number;
}

/** Starts the OpenRouter stand-in; `ready.url` is its base URL. */
export function startStandin(answer: Answer): Promise<Child> {
  return Child.start({
    name: "stand-in",
    command: Deno.execPath(),
    args: ["run", "-A", here("./standin_main.ts")],
    cwd: ROOT,
    env: {
      BENCH_TOKENS: String(answer.tokens),
      BENCH_GAP_MS: String(answer.gapMs),
      BENCH_PROBE_TOKENS: "2",
      BENCH_MAX_SECONDS: MAX_SECONDS,
    },
  });
}

/** Options for {@linkcode startGateway}. */
export interface GatewayOptions {
  upstreamUrl: string;
  /** Sessions end with their socket (the idle-memory runs). */
  noResume?: boolean;
  /** Write a V8 CPU profile into this directory when the gateway exits. */
  cpuProfDir?: string;
  /** Extra environment (`--env KEY=VALUE`), applied last. */
  env?: Record<string, string>;
  /** `UPSTREAM_TRANSPORT` (unset: the gateway's default). */
  transport?: string;
  /** Another checkout of the project to run the gateway from (`--baseline`). */
  root?: string;
}

/**
 * Starts the gateway with the bench's configuration: limits out of the way
 * (rate limits, connection caps), history off so every upstream request has
 * the same size, logs at warn.
 */
export function startGateway(opts: GatewayOptions): Promise<Child> {
  const flags = ["run", "-A", "--v8-flags=--expose-gc"];
  if (opts.cpuProfDir) flags.push("--cpu-prof", `--cpu-prof-dir=${opts.cpuProfDir}`);
  return Child.start({
    name: "gateway",
    command: Deno.execPath(),
    args: [...flags, opts.root ? `${opts.root}/bench/gateway_main.ts` : here("./gateway_main.ts")],
    cwd: opts.root ?? ROOT,
    env: {
      OPENROUTER_API_KEY: "sk-bench-not-a-real-key",
      OPENROUTER_BASE_URL: opts.upstreamUrl,
      PORT: "0",
      LOG_LEVEL: "warn",
      AUTH_MODE: "off",
      ALLOWED_ORIGINS: "",
      RATE_LIMIT_PER_MINUTE: "100000000",
      RATE_LIMIT_BURST: "100000000",
      MAX_CONNECTIONS: "100000",
      MAX_CONNECTIONS_PER_USER: "100000",
      // Every bench socket comes from 127.0.0.1: per-address and per-process session bounds
      // would otherwise end the idle sessions the bench measures.
      MAX_SESSIONS_PER_USER: "1000000",
      MAX_SESSIONS: "1000000",
      REPLAY_MEMORY_BYTES: "17179869184",
      MAX_ANSWER_CHARS: "1000000000",
      MAX_HISTORY: "0",
      MAX_CONNECTION_AGE_SECONDS: "0",
      RESUME_WINDOW_SECONDS: opts.noResume ? "0" : "120",
      BENCH_MAX_SECONDS: MAX_SECONDS,
      ...(opts.transport ? { UPSTREAM_TRANSPORT: opts.transport } : {}),
      ...opts.env,
    },
  });
}

/** Starts the bare echo server. */
export function startEcho(): Promise<Child> {
  return Child.start({
    name: "echo",
    command: Deno.execPath(),
    args: ["run", "-A", "--v8-flags=--expose-gc", here("./echo_server.ts")],
    cwd: ROOT,
    env: { BENCH_MAX_SECONDS: MAX_SECONDS },
  });
}

/** The floor relays: the same minimal relay reading the upstream four ways. */
export type RelayKind = "socket" | "fetch" | "node-http" | "node-ws";

/** Every relay, in the order the table lists them. */
export const RELAY_KINDS: RelayKind[] = ["socket", "fetch", "node-http", "node-ws"];

/** How each relay is named in the table. */
export const RELAY_NAMES: Record<RelayKind, string> = {
  socket: "raw-socket relay",
  fetch: "fetch relay",
  "node-http": "node:http relay",
  "node-ws": "Node + ws relay",
};

/** Where the Node + ws relay lives (its pinned `ws` is installed there). */
export const NODE_RELAY_DIR = here("./peers/node/");

/**
 * Starts a relay against the stand-in: `bench/relays/<kind>.ts` under Deno,
 * or `bench/peers/node/relay.mjs` under the Node on PATH for `node-ws`.
 */
export function startRelay(kind: RelayKind, upstreamUrl: string): Promise<Child> {
  const env = { BENCH_UPSTREAM_URL: upstreamUrl, BENCH_MAX_SECONDS: MAX_SECONDS };
  if (kind === "node-ws") {
    return Child.start({
      name: RELAY_NAMES[kind],
      command: "node",
      args: ["--expose-gc", `${NODE_RELAY_DIR}relay.mjs`, "--upstream", upstreamUrl],
      cwd: NODE_RELAY_DIR,
      env,
    });
  }
  const file = kind === "node-http" ? "node_http" : kind;
  return Child.start({
    name: RELAY_NAMES[kind],
    command: Deno.execPath(),
    args: ["run", "-A", "--v8-flags=--expose-gc", here(`./relays/${file}.ts`)],
    cwd: ROOT,
    env,
  });
}

/** A started gateway or echo server as a load target. */
export function targetOf(child: Child, name: string, greets: boolean): Target {
  const url = `ws://127.0.0.1:${child.ready.port}/`;
  return { name, socketUrl: () => url, pids: [child.pid], greets };
}
