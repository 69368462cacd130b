/**
 * The message bus between processes that share a Postgres session store,
 * over `LISTEN/NOTIFY`: "let go of this session" when a client resumes it
 * elsewhere, and notifications for a session whose socket lives in another
 * process.
 *
 * @module
 */
import type postgres from "postgres";
import { z } from "zod";
import { JsonObject } from "../protocol/frames.ts";

/** The channel every process listens on. */
export const CHANNEL = "agent_websocket";

/** Postgres refuses a NOTIFY payload of 8000 bytes or more. */
export const NOTIFY_MAX_BYTES = 7999;

/**
 * A message too large for one NOTIFY. Thrown by `publish` before anything is
 * sent, so a caller can answer with a clear 413 instead of a database error.
 *
 * @example
 * ```ts
 * import { type Bus, type BusMessage, BusPayloadTooLargeError } from "./bus.ts";
 * export async function send(bus: Bus, msg: BusMessage) {
 *   try {
 *     await bus.publish(msg);
 *   } catch (err) {
 *     if (err instanceof BusPayloadTooLargeError) console.log(err.bytes, err.limitBytes);
 *     else throw err;
 *   }
 * }
 * ```
 */
export class BusPayloadTooLargeError extends Error {
  constructor(readonly bytes: number, readonly limitBytes = NOTIFY_MAX_BYTES) {
    super(`Bus message is ${bytes} bytes; NOTIFY takes at most ${limitBytes}`);
    this.name = "BusPayloadTooLargeError";
  }
}

const encoder = new TextEncoder();

/** A message between processes. */
export const BusMessage = z.discriminatedUnion("kind", [
  /** `to` should flush and let go of `session`; `from` wants it. */
  z.object({ kind: z.literal("release"), session: z.string(), from: z.string() }),
  /** The holder let go; `from` may take the session now. */
  z.object({ kind: z.literal("released"), session: z.string(), from: z.string() }),
  /** Deliver a notification to `session`, wherever its socket is. */
  z.object({
    kind: z.literal("notify"),
    session: z.string(),
    from: z.string(),
    event: z.string(),
    content: z.string(),
    data: JsonObject.optional(),
  }),
]);

/** A parsed bus message. */
export type BusMessage = z.infer<typeof BusMessage>;

/** Publish and subscribe between processes. */
export interface Bus {
  /** Sends `msg` to every process; {@linkcode BusPayloadTooLargeError} when it cannot fit. */
  publish(msg: BusMessage): Promise<void>;
  /** Starts listening; resolves once the subscription is active. */
  subscribe(fn: (msg: BusMessage) => void): Promise<void>;
}

/** A Postgres client that may be replaced (the store replaces one that hangs). */
export interface PgClientSource {
  readonly sql: postgres.Sql;
  /** Calls `fn` after the client was replaced, so LISTEN can be issued again. */
  onReplaced(fn: () => void): void;
}

/**
 * A bus on the store's Postgres client. LISTEN survives connection resets
 * (postgres.js listens again on its own) and a replaced client (listened
 * again here).
 *
 * @example
 * ```ts
 * import { createPgBus } from "./bus.ts";
 * import type postgres from "postgres";
 * export async function wire(sql: postgres.Sql) {
 *   const bus = createPgBus(sql);
 *   await bus.subscribe((msg) => console.log(msg.kind));
 *   await bus.publish({ kind: "released", session: "s1", from: "me" });
 * }
 * ```
 */
export function createPgBus(client: postgres.Sql | PgClientSource): Bus {
  const source: PgClientSource = typeof client === "function"
    ? { sql: client, onReplaced: () => {} }
    : client;
  const handlers: ((msg: BusMessage) => void)[] = [];
  const deliver = (payload: string) => {
    let parsed;
    try {
      parsed = BusMessage.safeParse(JSON.parse(payload));
    } catch {
      return;
    }
    if (parsed.success) { for (const fn of handlers) fn(parsed.data); }
  };
  // One LISTEN per client: postgres.js listens again by itself after a reset (also
  // when the first attempt failed because the database was away), and a second
  // call on the same client would deliver every message twice.
  let listening: Promise<unknown> | undefined;
  source.onReplaced(() => {
    if (listening) listening = source.sql.listen(CHANNEL, deliver).catch(() => {});
  });
  return {
    async publish(msg) {
      const payload = JSON.stringify(msg);
      // Characters are not bytes: 4000 × "€" passes a 4000-character bound as 12 000 bytes.
      const bytes = payload.length <= NOTIFY_MAX_BYTES / 3
        ? payload.length
        : encoder.encode(payload).byteLength;
      if (bytes > NOTIFY_MAX_BYTES) throw new BusPayloadTooLargeError(bytes);
      await source.sql.notify(CHANNEL, payload);
    },
    async subscribe(fn) {
      handlers.push(fn);
      listening ??= source.sql.listen(CHANNEL, deliver);
      await listening;
    },
  };
}
