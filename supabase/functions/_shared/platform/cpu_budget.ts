/**
 * A soft budget on the isolate's CPU time. Hosted Supabase retires an
 * isolate that used up its CPU time (about 2 s), cutting whatever it was
 * streaming; noticing a soft limit first lets the server stop taking new
 * work and hand its sessions over while answers in flight finish.
 *
 * The clock is feature-checked: `process.threadCpuUsage()` (the isolate's
 * own thread, what a per-worker CPU limit counts; 10 ms steps under Deno),
 * else `process.cpuUsage()` (the whole process), else none — then the budget
 * says so (`source: "none"`) and never fires. Sampling is a timer that does
 * not keep the process alive, plus {@linkcode CpuBudget.check} for callers
 * that want a fresh reading at a decision point (a new query).
 *
 * @module
 */
import process from "node:process";

/** CPU milliseconds used so far. */
export type CpuClock = () => number;

/** Where the readings come from. */
export type CpuClockSource = "thread" | "process" | "custom" | "none";

/** Options of {@linkcode createCpuBudget}. */
export interface CpuBudgetOptions {
  /** CPU milliseconds after which `onExceeded` runs (once); 0 or less: never. */
  softMs: number;
  /** Called once, with the reading that crossed the budget. */
  onExceeded(usedMs: number): void;
  /** Milliseconds between samples (default 100). */
  sampleMs?: number;
  /** Count from now instead of from the start of the isolate (tests). */
  fromNow?: boolean;
  /** A clock to use instead of the detected one; null means there is none. */
  clock?: CpuClock | null;
}

/** A running budget. */
export interface CpuBudget {
  readonly source: CpuClockSource;
  readonly softMs: number;
  /** CPU milliseconds used so far (NaN without a clock). */
  usedMs(): number;
  /** Whether the budget has been crossed. */
  readonly exceeded: boolean;
  /** Samples now; returns whether the budget has been crossed. */
  check(): boolean;
  /** Stops sampling. */
  stop(): void;
}

type Usage = { user: number; system: number };
type WithCpu = { threadCpuUsage?: () => Usage; cpuUsage?: () => Usage };

/**
 * The best CPU clock this runtime offers, or null.
 *
 * @example
 * ```ts
 * import { detectCpuClock } from "./cpu_budget.ts";
 * const clock = detectCpuClock();
 * console.log(clock ? `${clock.source}: ${clock.read()} ms` : "no CPU clock");
 * ```
 */
export function detectCpuClock(): { source: "thread" | "process"; read: CpuClock } | null {
  const p = process as unknown as WithCpu;
  for (const [source, fn] of [["thread", p.threadCpuUsage], ["process", p.cpuUsage]] as const) {
    if (typeof fn !== "function") continue;
    try {
      const u = fn.call(process);
      if (!Number.isFinite(u.user + u.system)) continue;
    } catch {
      continue; // Present but not implemented.
    }
    return {
      source,
      read: () => {
        const u = fn.call(process);
        return (u.user + u.system) / 1000;
      },
    };
  }
  return null;
}

/**
 * Starts a budget.
 *
 * @example
 * ```ts
 * import { createCpuBudget } from "./cpu_budget.ts";
 * const budget = createCpuBudget({
 *   softMs: 1500,
 *   fromNow: true,
 *   onExceeded: (used) => console.log(`spent ${used} ms of CPU: hand sessions over`),
 * });
 * console.log(budget.check()); // false: nothing spent yet
 * budget.stop();
 * ```
 */
export function createCpuBudget(opts: CpuBudgetOptions): CpuBudget {
  const detected = opts.clock === undefined ? detectCpuClock() : null;
  const clock = opts.clock === undefined ? detected?.read : opts.clock ?? undefined;
  const source: CpuClockSource = opts.clock === undefined
    ? detected?.source ?? "none"
    : opts.clock
    ? "custom"
    : "none";
  const base = clock && opts.fromNow ? clock() : 0;
  const usedMs = () => (clock ? clock() - base : NaN);
  let exceeded = false;
  let timer: ReturnType<typeof setInterval> | undefined;
  const stop = () => {
    clearInterval(timer);
    timer = undefined;
  };
  const check = () => {
    if (exceeded || !clock || !(opts.softMs > 0)) return exceeded;
    const used = usedMs();
    if (used >= opts.softMs) {
      exceeded = true;
      stop();
      opts.onExceeded(used);
    }
    return exceeded;
  };
  if (clock && opts.softMs > 0) {
    timer = setInterval(check, opts.sampleMs ?? 100);
    Deno.unrefTimer(timer);
  }
  return {
    source,
    softMs: opts.softMs,
    usedMs,
    get exceeded() {
      return exceeded;
    },
    check,
    stop,
  };
}
