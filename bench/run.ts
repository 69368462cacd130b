/**
 * One run of the bench, phase by phase: stream levels (the gateway with each
 * upstream transport, the floor relays), naive design, ping, idle memory and
 * sweeper, then the Cloudflare peer. Every server is a fresh child process;
 * the stand-in serves them all.
 *
 * @module
 */
import type { BenchOptions } from "./flags.ts";
import { describeMachine } from "./machine.ts";
import type { Child } from "./child.ts";
import {
  NODE_RELAY_DIR,
  RELAY_NAMES,
  type RelayKind,
  startEcho,
  startGateway,
  startRelay,
  startStandin,
  targetOf,
} from "./servers.ts";
import { measureStreamLevel, type StreamLevelResult } from "./measures/streams.ts";
import { measureNaive } from "./measures/naive.ts";
import { measureToolLoop } from "./measures/tool_loop.ts";
import { measurePing, type PingResult } from "./measures/ping.ts";
import { type IdleResult, measureIdle, type MemoryReading } from "./measures/idle.ts";
import { ensureNpmInstalled, ensurePeerInstalled, startPeer } from "./peer.ts";
import { rssBytesOf } from "./proc.ts";
import { type ProfileSummary, summariseNewestProfile } from "./profile.ts";
import type { Target } from "./target.ts";
import type { BenchResults, PeerResults, SweepTimings } from "./results.ts";

/** Where progress lines go. */
export type Log = (line: string) => void;

/** Open files the bench and each server need at once for these sizes. */
export function fdsNeeded(o: BenchOptions): number {
  return Math.max(...o.idle, o.peer ? o.peerIdle : 0, 2 * Math.max(...o.streams, 0)) + 1000;
}

/** What every phase shares. */
interface Context {
  o: BenchOptions;
  log: Log;
  upstreamUrl: string;
  standin: Child;
  /** With `--profile`: where each level's gateway writes its CPU profile. */
  profileDir?: string;
  profiles: ProfileSummary[];
}

function describe(r: StreamLevelResult): string {
  return `${r.target} @ ${r.streams} streams: TTFT p50 ${r.ttft_ms.target.p50.toFixed(2)} ms ` +
    `(direct ${r.ttft_ms.direct.p50.toFixed(2)}), p99 ${r.ttft_ms.target.p99.toFixed(2)} ms ` +
    `(direct ${r.ttft_ms.direct.p99.toFixed(2)}), ${r.tokens_per_s.toFixed(0)} tok/s, ` +
    `${r.cpu_us_per_token.toFixed(1)} µs CPU/token, errors ${r.errors}`;
}

/** One stream level against a target; `server` is its control channel when it has one. */
function level(c: Context, target: Target, streams: number, server: Child | null) {
  return measureStreamLevel({
    target,
    upstreamUrl: c.upstreamUrl,
    standinPid: c.standin.pid,
    streams,
    durationMs: c.o.durationS * 1000,
    maxProbes: c.o.probes,
    tokens: c.o.tokens,
    gapMs: c.o.gapMs,
    heapBytes: server
      ? async () => (await server.request<Deno.MemoryUsage>("mem", { gc: false })).heapUsed
      : undefined,
    liveMemory: server ? () => server.request<Deno.MemoryUsage>("mem") : undefined,
  });
}

/** The pseudo-transport of a gateway run from `--baseline` (another checkout). */
export const BASELINE = "baseline";

/** The gateway's name in the table: which upstream transport it ran with. */
export const gatewayName = (transport: string) => `gateway (${transport})`;

/**
 * One level on a fresh gateway (sessions of one level must not weigh on the
 * next) with `transport`, profiled with `--profile`; or on `target` when
 * given (the peer).
 */
async function streamLevel(
  c: Context,
  n: number,
  target?: Target,
  transport = c.o.transports[0],
): Promise<StreamLevelResult> {
  const dir = c.profileDir && !target ? `${c.profileDir}/streams-${n}-${transport}` : undefined;
  const baseline = transport === BASELINE;
  const gateway = target ? null : await startGateway({
    upstreamUrl: c.upstreamUrl,
    cpuProfDir: dir,
    env: c.o.gatewayEnv,
    transport: baseline ? undefined : transport,
    root: baseline ? c.o.baseline : undefined,
  });
  const name = target?.name ?? gatewayName(transport);
  try {
    c.log(`${name}: ${n} concurrent streams, ${c.o.durationS} s windows...`);
    const r = await level(c, target ?? targetOf(gateway!, name, true), n, gateway);
    c.log(describe(r));
    return r;
  } finally {
    await gateway?.stop();
    if (dir) {
      c.profiles.push({ ...(await summariseNewestProfile(dir)), label: `${n} streams, ${name}` });
    }
  }
}

/** The same level on a floor relay. */
async function relayLevel(c: Context, kind: RelayKind, n: number): Promise<StreamLevelResult> {
  const relay = await startRelay(kind, c.upstreamUrl);
  try {
    c.log(`${RELAY_NAMES[kind]}: ${n} concurrent streams, ${c.o.durationS} s windows...`);
    const r = await level(c, targetOf(relay, RELAY_NAMES[kind], true), n, relay);
    c.log(describe(r));
    return r;
  } finally {
    await relay.stop();
  }
}

/** Naive design and ping on one gateway, then ping on the bare echo. */
async function pingAndNaive(c: Context) {
  const { o } = c;
  const gateway = await startGateway({
    upstreamUrl: c.upstreamUrl,
    env: o.gatewayEnv,
    transport: o.transports[0],
  });
  let naive, pingGateway, toolLoop;
  try {
    const target = targetOf(gateway, "gateway", true);
    c.log(`naive design: ${o.naive} full answers each way...`);
    naive = await measureNaive(target, o.naive, (o.tokens - 1) * o.gapMs);
    c.log(`tool loop: ${o.naive} client-tool round trips...`);
    toolLoop = await measureToolLoop(target, o.naive);
    c.log(`ping: gateway, ${o.pingClients} clients...`);
    pingGateway = await measurePing(target, o.pingClients, o.pingDurationS * 1000);
  } finally {
    await gateway.stop();
  }
  const echo = await startEcho();
  let pingEcho;
  try {
    c.log(`ping: bare echo, ${o.pingClients} clients...`);
    pingEcho = await measurePing(
      targetOf(echo, "bare echo", false),
      o.pingClients,
      o.pingDurationS * 1000,
    );
  } finally {
    await echo.stop();
  }
  c.log(
    `ping: gateway ${pingGateway.round_trips_per_s.toFixed(0)}/s, ` +
      `echo ${pingEcho.round_trips_per_s.toFixed(0)}/s`,
  );
  return { naive, toolLoop, ping: { gateway: pingGateway, echo: pingEcho } };
}

/** A Deno server's memory through its control channel. */
async function denoMemory(server: Child): Promise<MemoryReading> {
  const m = await server.request<Deno.MemoryUsage>("mem");
  return { rss: m.rss, heap: m.heapUsed };
}

/** Idle memory of a fresh gateway and a fresh echo; the sweeper at the largest size. */
async function idlePhase(c: Context, sizes: number[]) {
  const largest = Math.max(...sizes);
  let sweeper: SweepTimings | null = null;
  const gateway = await startGateway({
    upstreamUrl: c.upstreamUrl,
    noResume: true,
    env: c.o.gatewayEnv,
    transport: c.o.transports[0],
  });
  let idleGateway: IdleResult;
  try {
    c.log(`idle memory: gateway, ${sizes.join(", ")} sessions...`);
    idleGateway = await measureIdle(targetOf(gateway, "gateway", true), sizes, {
      memory: () => denoMemory(gateway),
      count: () => gateway.request<number>("sessions"),
      atSize: async (n) => {
        if (n !== largest) return undefined;
        sweeper = await gateway.request<SweepTimings>("sweep", { passes: 50 });
        return sweeper;
      },
    });
  } finally {
    await gateway.stop();
  }
  const echo = await startEcho();
  let idleEcho: IdleResult;
  try {
    c.log(`idle memory: bare echo, ${sizes.join(", ")} sockets...`);
    idleEcho = await measureIdle(targetOf(echo, "bare echo", false), sizes, {
      memory: () => denoMemory(echo),
      count: () => echo.request<number>("sockets"),
    });
  } finally {
    await echo.stop();
  }
  return {
    idle: { gateway: idleGateway, echo: idleEcho },
    sweeper: sweeper as SweepTimings | null,
  };
}

/**
 * The Cloudflare peer with the same clients and the same stand-in. A peer
 * that cannot run is reported as "not run: <reason>"; the rest of the run
 * stands.
 */
async function peerPhase(c: Context, gatewayAtPeerLevel: StreamLevelResult): Promise<PeerResults> {
  const { o } = c;
  let running: Awaited<ReturnType<typeof startPeer>> | null = null;
  try {
    await ensurePeerInstalled(c.log);
    c.log("starting the Cloudflare Agents SDK peer (wrangler unstable_startWorker)...");
    running = await startPeer(c.upstreamUrl);
    const p = running;
    const memory = () => Promise.resolve({ rss: rssBytesOf(p.target.pids), heap: null });
    // The shared agent first: agents of the per-client run may be evicted later.
    c.log(`peer: idle memory, ${o.peerIdle} sockets on one shared agent...`);
    const idleShared = await measureIdle(p.sharedTarget, [o.peerIdle], { memory });
    c.log(`peer: idle memory, ${o.peerIdle} sockets, one agent each...`);
    const idle = await measureIdle(p.target, [o.peerIdle], { memory });
    c.log(`peer: ping, ${o.pingClients} clients...`);
    const ping = await measurePing(p.target, o.pingClients, o.pingDurationS * 1000);
    const streams = await streamLevel(c, o.peerStreams, p.target);
    return {
      ran: true,
      versions: p.versions,
      proxy_url: p.proxyUrl,
      ping,
      streams: { gateway: gatewayAtPeerLevel, peer: streams },
      idle,
      idle_shared: idleShared,
    };
  } catch (err) {
    c.log(`the Cloudflare peer did not run: ${err instanceof Error ? err.stack : err}`);
    return { ran: false, reason: String(err instanceof Error ? err.message : err).split("\n")[0] };
  } finally {
    await running?.stop();
  }
}

/** Notes for every window in which other processes kept the machine busy. */
function noiseNotes(windows: { what: string; others: number }[]): string[] {
  return windows
    .filter((w) => w.others > 0.2)
    .map((w) =>
      `other processes kept ${w.others.toFixed(2)} cores busy during "${w.what}": ` +
      "treat it with care"
    );
}

/** Runs every phase and returns the results (it throws when the harness breaks). */
export async function runBench(o: BenchOptions, log: Log): Promise<BenchResults> {
  const started = performance.now();
  const startedAt = new Date().toISOString();
  const notes: string[] = [];
  const machine = await describeMachine();
  const limit = machine.open_files_limit.soft;
  if (limit < fdsNeeded(o)) {
    const cap = Math.max(100, limit - 1000);
    notes.push(
      `open-file limit is ${limit} (hard ${machine.open_files_limit.hard}): ` +
        `idle sizes capped at ${cap}`,
    );
    o.idle = o.idle.map((n) => Math.min(n, cap));
    o.peerIdle = Math.min(o.peerIdle, cap);
  }
  log(`machine: ${machine.cores} cores, ${machine.cpu_model}, Deno ${machine.deno}`);
  const profileDir = o.profile ? `${o.outDir}/profile-${Date.now()}` : undefined;
  if (profileDir) await Deno.mkdir(profileDir, { recursive: true });

  const standin = await startStandin({ tokens: o.tokens, gapMs: o.gapMs });
  try {
    const c: Context = {
      o,
      log,
      upstreamUrl: standin.ready.url as string,
      standin,
      profileDir,
      profiles: [],
    };
    if (o.relays.includes("node-ws")) {
      try {
        await ensureNpmInstalled(NODE_RELAY_DIR, "ws", log);
      } catch (err) {
        const why = String(err instanceof Error ? err.message : err).split("\n")[0];
        notes.push(`the Node + ws relay did not run: ${why}`);
        o.relays = o.relays.filter((k) => k !== "node-ws");
      }
    }
    const streams: StreamLevelResult[] = [];
    const transports: StreamLevelResult[] = [];
    const floor: StreamLevelResult[] = [];
    const top = Math.max(...o.streams);
    for (const n of o.streams) {
      streams.push(await streamLevel(c, n));
      if (o.compareAt === "top" && n !== top) continue;
      const others = [...o.transports.slice(1), ...(o.baseline ? [BASELINE] : [])];
      for (const t of others) transports.push(await streamLevel(c, n, undefined, t));
      for (const kind of o.relays) floor.push(await relayLevel(c, kind, n));
    }
    const { naive, toolLoop, ping } = await pingAndNaive(c);
    const idleSizes = [...new Set([...o.idle, ...(o.peer ? [o.peerIdle] : [])])];
    const { idle, sweeper } = await idlePhase(c, idleSizes.sort((a, b) => a - b));
    let peer: PeerResults = { ran: false, reason: "--no-peer" };
    if (o.peer) {
      const atPeerLevel = streams.find((s) => s.streams === o.peerStreams) ??
        await streamLevel(c, o.peerStreams);
      peer = await peerPhase(c, atPeerLevel);
    }
    notes.push(...noiseNotes([
      ...[...streams, ...transports, ...floor, ...(peer.ran ? [peer.streams.peer] : [])].map((
        r,
      ) => ({
        what: `${r.target} @ ${r.streams} streams`,
        others: r.cores.others,
      })),
      ...[ping.gateway, ping.echo, ...(peer.ran ? [peer.ping] : [])].map((p: PingResult) => ({
        what: `ping ${p.target}`,
        others: p.cores.others,
      })),
    ]));
    return {
      started_at: startedAt,
      duration_s: (performance.now() - started) / 1000,
      machine,
      options: o,
      streams,
      transports,
      floor,
      naive,
      toolLoop,
      ping,
      idle,
      sweeper,
      peer,
      profiles: c.profiles,
      notes,
    };
  } finally {
    await standin.stop();
  }
}
