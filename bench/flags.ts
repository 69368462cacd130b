/**
 * Command-line flags of `deno task bench`. Sizes are lists; `--smoke` picks
 * tiny sizes for CI (and skips the Cloudflare peer unless `--peer` is given).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { RELAY_KINDS, type RelayKind } from "./servers.ts";

/** `UPSTREAM_TRANSPORT` values the gateway can be run with. */
const TRANSPORTS = ["socket", "fetch"];

/** Everything a run is parameterised by. */
export interface BenchOptions {
  /** Concurrent background streams, one TTFT/throughput level each. */
  streams: number[];
  /** Idle socket counts for the memory measure (cumulative, ascending). */
  idle: number[];
  /** Seconds of measured window per stream level. */
  durationS: number;
  /** Seconds of measured window per ping run. */
  pingDurationS: number;
  pingClients: number;
  /** TTFT probes per side per level, at most. */
  probes: number;
  /** The stand-in's fixed answer. */
  tokens: number;
  gapMs: number;
  /** Full-length queries each way for the naive-design measure. */
  naive: number;
  peer: boolean;
  /** Concurrent streams for the peer comparison. */
  peerStreams: number;
  /** Idle sockets for the peer comparison (also measured on the gateway). */
  peerIdle: number;
  /** Write a V8 CPU profile of the gateway during the stream levels. */
  profile: boolean;
  /** Floor relays run beside the gateway (empty with `--no-floor`). */
  relays: RelayKind[];
  /** `UPSTREAM_TRANSPORT` of each gateway run; the first one is the gateway of every other phase. */
  transports: string[];
  /** Levels the relays and the other transports run at: every level, or the largest only. */
  compareAt: "all" | "top";
  /** Another checkout of the project whose gateway runs beside ours as "gateway (baseline)". */
  baseline?: string;
  /** Extra environment for every gateway process (`--env KEY=VALUE`, repeatable). */
  gatewayEnv: Record<string, string>;
  /** Directory for the JSON, SVG and Markdown results. */
  outDir: string;
  /** Base name of the result files. */
  name: string;
  smoke: boolean;
}

/** Printed by `--help`. */
export const USAGE = `deno task bench [flags]

  --streams 1,100,1000     concurrent background streams per TTFT/throughput level
  --idle 1000,10000        idle sockets for the memory measure (cumulative)
  --duration 8             seconds per window (throughput, then TTFT) per stream level
  --ping-duration 5        seconds measured per ping run
  --ping-clients 50        clients in the ping run
  --probes 500             TTFT probes per side per level, at most
  --tokens 100             tokens per stand-in answer
  --gap-ms 50              milliseconds between stand-in tokens
  --naive 10               full-length queries each way (stream: false vs streaming)
  --peer / --no-peer       run the Cloudflare Agents SDK peer (default: on, off with --smoke)
  --peer-streams 20        concurrent streams for the peer comparison
  --peer-idle 1000         idle sockets for the peer comparison
  --profile                write a V8 CPU profile of the gateway's stream levels
  --relays socket,fetch,node-http,node-ws
                           floor relays run beside the gateway (smoke: socket)
  --floor / --no-floor     run the relays at all (default: on)
  --transports socket,fetch
                           UPSTREAM_TRANSPORT of each gateway run; the first is the gateway
                           of the other phases
  --compare-at all|top     levels of the relays and extra transports (smoke: top = the largest)
  --baseline DIR           also run the gateway of another checkout (e.g. a git archive of an
                           older commit) at those levels, as "gateway (baseline)"
  --env KEY=VALUE          extra gateway environment, repeatable (e.g. REPLAY_MAX_FRAMES=10)
  --out bench/results      where results go
  --name latest            base name of the result files (smoke: "smoke")
  --smoke                  tiny sizes for CI; finishes in well under a minute
`;

function list(text: string, flag: string): number[] {
  const values = text.split(",").map((s) => Number(s.trim()));
  if (values.length === 0 || values.some((v) => !Number.isInteger(v) || v < 0)) {
    throw new Error(`--${flag} takes comma-separated non-negative integers, got "${text}"`);
  }
  return values;
}

function positive(text: string | undefined, fallback: number, flag: string): number {
  if (text === undefined) return fallback;
  const v = Number(text);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${flag} takes a positive number`);
  return v;
}

/** Parses flags; throws with a readable message on anything unknown or malformed. */
export function parseFlags(args: string[]): BenchOptions | "help" {
  const { values: v } = parseArgs({
    args,
    strict: true,
    allowNegative: true,
    options: {
      streams: { type: "string" },
      idle: { type: "string" },
      duration: { type: "string" },
      "ping-duration": { type: "string" },
      "ping-clients": { type: "string" },
      probes: { type: "string" },
      tokens: { type: "string" },
      "gap-ms": { type: "string" },
      naive: { type: "string" },
      peer: { type: "boolean" },
      "peer-streams": { type: "string" },
      "peer-idle": { type: "string" },
      profile: { type: "boolean" },
      floor: { type: "boolean" },
      relays: { type: "string" },
      transports: { type: "string" },
      "compare-at": { type: "string" },
      baseline: { type: "string" },
      env: { type: "string", multiple: true },
      out: { type: "string" },
      name: { type: "string" },
      smoke: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (v.help) return "help";
  const smoke = v.smoke ?? false;
  const d = smoke
    ? {
      streams: "1,20",
      idle: "200",
      duration: 2,
      ping: 1,
      probes: 40,
      tokens: 5,
      gap: 20,
      naive: 2,
      peerStreams: 5,
      peerIdle: 200,
    }
    : {
      streams: "1,100,1000",
      idle: "1000,10000",
      duration: 8,
      ping: 5,
      probes: 500,
      tokens: 100,
      gap: 50,
      naive: 10,
      peerStreams: 20,
      peerIdle: 1000,
    };
  const names = (text: string, allowed: readonly string[], flag: string) => {
    const values = text.split(",").map((x) => x.trim()).filter((x) => x !== "");
    const bad = values.find((x) => !allowed.includes(x));
    if (bad) throw new Error(`--${flag}: "${bad}" is not one of ${allowed.join(", ")}`);
    return values;
  };
  const compareAt = v["compare-at"] ?? (smoke ? "top" : "all");
  if (compareAt !== "all" && compareAt !== "top") throw new Error("--compare-at is all or top");
  const transports = names(v.transports ?? TRANSPORTS.join(","), TRANSPORTS, "transports");
  if (transports.length === 0) throw new Error("--transports needs at least one");
  const tokens = positive(v.tokens, d.tokens, "tokens");
  if (!Number.isInteger(tokens) || tokens < 2) throw new Error("--tokens must be an integer ≥ 2");
  return {
    streams: list(v.streams ?? d.streams, "streams"),
    idle: list(v.idle ?? d.idle, "idle").filter((n) => n > 0),
    durationS: positive(v.duration, d.duration, "duration"),
    pingDurationS: positive(v["ping-duration"], d.ping, "ping-duration"),
    pingClients: Math.round(positive(v["ping-clients"], 50, "ping-clients")),
    probes: Math.round(positive(v.probes, d.probes, "probes")),
    tokens,
    gapMs: positive(v["gap-ms"], d.gap, "gap-ms"),
    naive: Math.round(positive(v.naive, d.naive, "naive")),
    peer: v.peer ?? !smoke,
    peerStreams: Math.round(positive(v["peer-streams"], d.peerStreams, "peer-streams")),
    peerIdle: Math.round(positive(v["peer-idle"], d.peerIdle, "peer-idle")),
    profile: v.profile ?? false,
    relays: v.floor === false ? [] : names(
      v.relays ?? (smoke ? "socket" : RELAY_KINDS.join(",")),
      RELAY_KINDS,
      "relays",
    ) as RelayKind[],
    transports,
    compareAt,
    baseline: v.baseline,
    gatewayEnv: Object.fromEntries((v.env ?? []).map((pair) => {
      const eq = pair.indexOf("=");
      if (eq <= 0) throw new Error(`--env takes KEY=VALUE, got "${pair}"`);
      return [pair.slice(0, eq), pair.slice(eq + 1)];
    })),
    outDir: v.out ?? new URL("./results/", import.meta.url).pathname,
    name: v.name ?? (smoke ? "smoke" : "latest"),
    smoke,
  };
}
