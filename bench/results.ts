/**
 * The shape of one run's results, as written to `bench/results/<name>.json`.
 *
 * @module
 */
import type { BenchOptions } from "./flags.ts";
import type { Machine } from "./machine.ts";
import type { StreamLevelResult } from "./measures/streams.ts";
import type { NaiveResult } from "./measures/naive.ts";
import type { ToolLoopResult } from "./measures/tool_loop.ts";
import type { PingResult } from "./measures/ping.ts";
import type { IdleResult } from "./measures/idle.ts";
import type { ProfileSummary } from "./profile.ts";

/** Timings of `SessionRegistry.sweep` passes, in milliseconds. */
export interface SweepTimings {
  sessions: number;
  no_expiry: { count: number; p50: number; p99: number; max: number; expired: number };
  configured: { count: number; p50: number; p99: number; max: number; expired: number };
}

/** The Cloudflare comparison, or why it did not run. */
export type PeerResults =
  | {
    ran: true;
    versions: { agents: string; wrangler: string; workerd: string };
    proxy_url: string;
    ping: PingResult;
    streams: { gateway: StreamLevelResult; peer: StreamLevelResult };
    idle: IdleResult;
    /** The same sockets all on one agent. */
    idle_shared: IdleResult;
  }
  | { ran: false; reason: string };

/** Everything one run measured. */
export interface BenchResults {
  started_at: string;
  duration_s: number;
  machine: Machine;
  options: BenchOptions;
  /** The gateway at each stream level, with the first of `options.transports`. */
  streams: StreamLevelResult[];
  /** The gateway with each other transport (`options.compareAt` levels). */
  transports: StreamLevelResult[];
  /** The floor relays (`options.relays`, `options.compareAt` levels). */
  floor: StreamLevelResult[];
  naive: NaiveResult;
  /** A client-tool round trip against two plain model calls. */
  toolLoop: ToolLoopResult;
  ping: { gateway: PingResult; echo: PingResult };
  idle: { gateway: IdleResult; echo: IdleResult };
  sweeper: SweepTimings | null;
  peer: PeerResults;
  /** With `--profile`: the gateway's hottest functions at each stream level. */
  profiles: ProfileSummary[];
  /** Anything the reader must know (limits hit, sizes capped). */
  notes: string[];
}
