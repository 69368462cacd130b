/**
 * Test harness: the real server on a random port, the OpenRouter stand-in on
 * another, and a WebSocket client that waits on frames with deadlines
 * instead of sleeping.
 *
 * @module
 */
import v8 from "node:v8";
import vm from "node:vm";
import { type Config, loadConfig } from "../supabase/functions/_shared/platform/config.ts";
import { type RunningServer, startServer } from "../supabase/functions/_shared/http/app.ts";
import type { SessionStore } from "../supabase/functions/_shared/store/store.ts";
import type { AgentDefinition } from "../supabase/functions/_shared/agent/definition.ts";
import type { Verifier } from "../supabase/functions/_shared/platform/auth.ts";
import {
  type Simulator,
  type SimulatorOptions,
  startSimulator,
} from "../dev/openrouter_simulator.ts";

/**
 * Runs a full garbage collection when V8 lets us turn `gc()` on (it does,
 * from inside a test); returns whether it could. Memory checks use it so that
 * they measure what is still reachable, not what is merely uncollected.
 */
export function collectGarbage(): boolean {
  try {
    v8.setFlagsFromString("--expose-gc");
    const gc = vm.runInNewContext("gc") as () => void;
    gc();
    gc();
    return true;
  } catch {
    return false;
  }
}

/** A key that must never show up in a frame or a log line. */
export const TEST_API_KEY = "sk-or-v1-TEST-SECRET-0123456789abcdef";

/** A frame as received; tests read its fields freely. */
// deno-lint-ignore no-explicit-any
export type Frame = Record<string, any>;

/** A server, its stand-in upstream, and everything they logged. */
export interface Stack {
  sim: Simulator;
  server: RunningServer;
  config: Config;
  /** `ws://` URL of the server. */
  wsUrl: string;
  logs: string[];
  close(): Promise<void>;
}

/**
 * Starts the stand-in and the server with short timers. `env` overrides the
 * environment the config is parsed from.
 */
export async function startStack(
  env: Record<string, string> = {},
  simOpts: SimulatorOptions = {},
  opts: { store?: SessionStore; agent?: AgentDefinition; verifier?: Verifier } = {},
): Promise<Stack> {
  const sim = startSimulator({ tokenDelayMs: 2, ...simOpts });
  const result = loadConfig({
    OPENROUTER_API_KEY: TEST_API_KEY,
    OPENROUTER_BASE_URL: sim.url,
    PORT: "0",
    LOG_LEVEL: "debug",
    UPSTREAM_RETRY_BASE_MS: "5",
    UPSTREAM_RETRY_MAX_MS: "50",
    UPSTREAM_FIRST_TOKEN_TIMEOUT_SECONDS: "2",
    UPSTREAM_TOTAL_TIMEOUT_SECONDS: "5",
    RATE_LIMIT_BURST: "100",
    RATE_LIMIT_PER_MINUTE: "6000",
    ...env,
  });
  if (!result.ok) {
    await sim.close();
    throw new Error(result.errors.join("; "));
  }
  const logs: string[] = [];
  const server = startServer(result.config, {
    logSink: (line) => logs.push(line),
    hostname: "127.0.0.1",
    store: opts.store,
    agent: opts.agent,
    verifier: opts.verifier,
  });
  return {
    sim,
    server,
    config: result.config,
    wsUrl: server.url.replace("http://", "ws://"),
    logs,
    async close() {
      await server.shutdown("test_done");
      await sim.close();
    },
  };
}

/** Waits for `pred` to hold, polling events, or fails after `ms`. */
export function deadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * A WebSocket client that records every frame and lets a test wait for the
 * next one matching a predicate.
 */
export class TestClient {
  readonly frames: Frame[] = [];
  /** Raw text or binary frames that were not JSON (there should be none). */
  readonly garbage: unknown[] = [];
  closeEvent: CloseEvent | null = null;
  readonly closed: Promise<CloseEvent>;
  #waiters: { pred: (f: Frame) => boolean; from: number; resolve: (f: Frame) => void }[] = [];

  private constructor(readonly ws: WebSocket) {
    this.closed = new Promise((resolve) => {
      ws.addEventListener("close", (e) => {
        this.closeEvent = e;
        resolve(e);
      });
    });
    ws.addEventListener("message", (e) => {
      let frame: Frame;
      try {
        frame = JSON.parse(e.data);
      } catch {
        this.garbage.push(e.data);
        return;
      }
      this.frames.push(frame);
      const index = this.frames.length - 1;
      this.#waiters = this.#waiters.filter((w) => {
        if (index >= w.from && w.pred(frame)) {
          w.resolve(frame);
          return false;
        }
        return true;
      });
    });
  }

  /** Opens a socket and waits for it to be open. */
  static async connect(url: string, protocols?: string | string[]): Promise<TestClient> {
    const ws = new WebSocket(url, protocols);
    const client = new TestClient(ws);
    await deadline(
      new Promise<void>((resolve, reject) => {
        ws.addEventListener("open", () => resolve(), { once: true });
        ws.addEventListener("error", () => reject(new Error(`could not connect to ${url}`)), {
          once: true,
        });
      }),
      3000,
      "socket open",
    );
    return client;
  }

  /** Connects and waits for the `connected` notification. */
  static async open(url: string): Promise<{ client: TestClient; connected: Frame }> {
    const client = await TestClient.connect(url);
    const connected = await client.waitFor((f) => f.event === "connected", "connected");
    return { client, connected };
  }

  /** Sends an object as JSON, or a string / bytes as they are. */
  send(frame: unknown): void {
    this.ws.send(
      typeof frame === "string" || frame instanceof Uint8Array ? frame : JSON.stringify(frame),
    );
  }

  /** Sends a query and returns its id. */
  query(content: string, extra: Record<string, unknown> = {}): string {
    const id = (extra.id as string | undefined) ?? crypto.randomUUID();
    this.send({ type: "query", content, id, ...extra });
    return id;
  }

  /**
   * Resolves with the first frame, received at or after index `from`
   * (default: any time so far), that matches `pred`.
   */
  waitFor(pred: (f: Frame) => boolean, what = "frame", ms = 3000, from = 0): Promise<Frame> {
    const found = this.frames.slice(from).find(pred);
    if (found) return Promise.resolve(found);
    return deadline(
      new Promise<Frame>((resolve) => this.#waiters.push({ pred, from, resolve })),
      ms,
      `${what}; got: ${JSON.stringify(this.frames.slice(-5))}`,
    );
  }

  /** Waits for the next matching frame after everything received so far. */
  next(pred: (f: Frame) => boolean = () => true, what = "next frame", ms = 3000): Promise<Frame> {
    return this.waitFor(pred, what, ms, this.frames.length);
  }

  /** Waits for the terminal frame of a query (final response or error). */
  terminal(id: string, ms = 3000): Promise<Frame> {
    return this.waitFor((f) => isTerminal(f) && f.id === id, `terminal of ${id}`, ms);
  }

  /** Every frame that belongs to a query id. */
  framesOf(id: string): Frame[] {
    return this.frames.filter((f) => f.id === id);
  }

  /** Closes the socket and waits until it is closed. */
  async close(code = 1000): Promise<void> {
    if (this.ws.readyState < WebSocket.CLOSING) this.ws.close(code);
    await deadline(this.closed, 3000, "socket close");
  }
}

/** Whether a frame ends a query. */
export function isTerminal(f: Frame): boolean {
  return (f.type === "response" && f.done === true) || (f.type === "error" && f.id !== undefined);
}

/** Asserts that seq runs 1, 2, 3, … without gaps or repeats. */
export function assertGapless(frames: Frame[]): void {
  frames.forEach((f, i) => {
    if (f.seq !== i + 1) {
      throw new Error(`seq gap at index ${i}: expected ${i + 1}, got ${f.seq}`);
    }
  });
}

/** Polls `check` every few milliseconds until it holds, or fails after `ms`. */
export async function eventually(check: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = performance.now() + ms;
  while (!check()) {
    if (performance.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
