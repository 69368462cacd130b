/**
 * The message bus between processes that share a Postgres session store,
 * over `LISTEN/NOTIFY`: sockets attached to a session held by another process
 * (their frames come from the holder, their client frames go to it), handing
 * a session over, and notifications for a session whose socket is elsewhere.
 * A message too big for one NOTIFY (8000 bytes) travels by reference: the
 * payload goes into a table, the NOTIFY carries its id.
 *
 * @module
 */
import type postgres from "postgres";
import { z } from "zod";
import { frameBytes, JsonObject } from "../protocol/frames.ts";
import { sleep } from "../platform/backoff.ts";

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

/** A message between processes. */
export const BusMessage = z.discriminatedUnion("kind", [
  /**
   * The holder `from` let go of `session`, after writing all of it: a process
   * relaying it takes it now. `took` names, per relaying process, the last
   * client frame (its `n`) the holder handled; the later ones it never will.
   */
  z.object({
    kind: z.literal("released"),
    session: z.string(),
    from: z.string(),
    took: z.record(z.string(), z.number()).optional(),
  }),
  /** Deliver a notification to `session`, wherever its socket is. */
  z.object({
    kind: z.literal("notify"),
    session: z.string(),
    from: z.string(),
    event: z.string(),
    content: z.string(),
    data: JsonObject.optional(),
  }),
  /**
   * A relay tells the holder `to` which of its sockets are attached to
   * `session` now (all of them; none: it let go). `fresh` are sockets that
   * joined without a resume: the holder greets them (`connected`).
   */
  z.object({
    kind: z.literal("watch"),
    session: z.string(),
    from: z.string(),
    to: z.string(),
    sockets: z.array(z.string()).max(10_000),
    fresh: z.array(z.string()).max(10_000),
    /** The users of the fresh sockets' tokens are checked by the relay; the holder trusts it. */
    user: JsonObject.nullable().optional(),
  }),
  /**
   * The holder's answer to `watch`: it serves those sockets. `starts` gives,
   * for each fresh socket, the seq after which its frames begin.
   */
  z.object({
    kind: z.literal("watching"),
    session: z.string(),
    from: z.string(),
    to: z.string(),
    starts: z.record(z.string(), z.number()),
    /** The session is not held here (any more): look again, and take it if nobody does. */
    gone: z.boolean().optional(),
    /** The last of `to`'s client frames (its `n`) the holder handled, if it knows. */
    took: z.number().optional(),
  }),
  /** Frames of `session` that just became durable, in seq order (the holder to its relays). */
  z.object({
    kind: z.literal("frames"),
    session: z.string(),
    from: z.string(),
    frames: z.array(z.object({ seq: z.number(), json: z.string() })),
  }),
  /**
   * A frame a client sent on a relayed socket, for the holder `to`. `n`
   * rises with every client frame the relay `from` sends; the holder's
   * `took` acknowledges up to one, so the relay knows which to send again
   * if the holder goes. `retry`: it may have been handled already (its
   * holder went silent), so one whose query is known is dropped.
   */
  z.object({
    kind: z.literal("client"),
    session: z.string(),
    from: z.string(),
    to: z.string(),
    socket: z.string(),
    data: z.string(),
    n: z.number().optional(),
    retry: z.boolean().optional(),
  }),
  /** The holder asks the relay `to` to close one of its sockets. */
  z.object({
    kind: z.literal("close"),
    session: z.string(),
    from: z.string(),
    to: z.string(),
    socket: z.string(),
    code: z.number(),
    reason: z.string(),
    /** A socket-only frame to send before closing (seq 0), e.g. `session_taken_over`. */
    say: JsonObject.optional(),
  }),
  /** The memory of `session` was cleared: its holder forgets its cached history. */
  z.object({ kind: z.literal("cleared"), session: z.string(), from: z.string() }),
]);

/** A parsed bus message. */
export type BusMessage = z.infer<typeof BusMessage>;

/** How {@linkcode Bus.publish} treats a message too big for one NOTIFY. */
export interface PublishOptions {
  /**
   * `refuse` (default): throw {@linkcode BusPayloadTooLargeError}.
   * `reference`: store it in a table and send its id; receivers read it back.
   */
  large?: "refuse" | "reference";
}

/** Publish and subscribe between processes. */
export interface Bus {
  /** Sends `msg` to every process. */
  publish(msg: BusMessage, opts?: PublishOptions): Promise<void>;
  /**
   * Starts listening; resolves once the subscription is active. `wants`
   * skips, before it is read back, a message sent by reference that this
   * process has no use for.
   */
  subscribe(
    fn: (msg: BusMessage) => void,
    wants?: (about: { session: string; to?: string }) => boolean,
  ): Promise<void>;
}

/**
 * Publishes messages in the order given, per session: one that goes by
 * reference (a table insert first) is never overtaken by a later, smaller
 * one. A failure is handed to `onError` and does not stop the ones after it;
 * the promise returned never rejects. With `keepTrying`, a failed publish is
 * tried again (after 0.1 s, doubling to 2 s) for as long as it says so,
 * holding back the session's later messages meanwhile.
 *
 * @example
 * ```ts
 * import { type Bus, orderedPublisher } from "./bus.ts";
 * export function wire(bus: Bus) {
 *   const publish = orderedPublisher(bus, (err) => console.warn(err));
 *   return publish({ kind: "released", session: "s1", from: "me" });
 * }
 * ```
 */
export function orderedPublisher(
  bus: Bus,
  onError: (err: unknown, msg: BusMessage) => void,
): (msg: BusMessage, keepTrying?: () => boolean) => Promise<void> {
  const chains = new Map<string, Promise<void>>();
  return (msg, keepTrying) => {
    const attempt = async () => {
      for (let waitMs = 100;; waitMs = Math.min(waitMs * 2, 2000)) {
        try {
          return await bus.publish(msg, { large: "reference" });
        } catch (err) {
          if (!keepTrying?.()) throw err;
          await sleep(waitMs);
        }
      }
    };
    const run = (chains.get(msg.session) ?? Promise.resolve())
      .then(attempt)
      .catch((err) => onError(err, msg));
    chains.set(msg.session, run);
    run.finally(() => chains.get(msg.session) === run && chains.delete(msg.session));
    return run;
  };
}

/** Payloads stored by reference are deleted after this long (every receiver has read them). */
export const REFERENCE_TTL_SECONDS = 60;

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
  let wanted: ((about: { session: string; to?: string }) => boolean) | undefined;
  const dispatch = (raw: unknown) => {
    const parsed = BusMessage.safeParse(raw);
    if (parsed.success) { for (const fn of handlers) fn(parsed.data); }
  };
  // Messages are handled in the order they were sent: one read by reference holds
  // back the small ones after it (a client's frames must reach the holder in order).
  let order: Promise<void> = Promise.resolve();
  const deliver = (payload: string) => {
    let raw: unknown;
    try {
      raw = JSON.parse(payload);
    } catch {
      return;
    }
    const ref = Reference.safeParse(raw);
    if (!ref.success) {
      order = order.then(() => dispatch(raw));
      return;
    }
    if (wanted && !wanted({ session: ref.data.session, to: ref.data.to })) return;
    const read = source.sql<{ payload: string }[]>`
      select payload from agent_websocket.bus_payloads where id = ${ref.data.ref}`
      .then(([row]) => row ? JSON.parse(row.payload) : undefined)
      .catch(() => undefined); // The database went away; receivers fill gaps from the store.
    order = order.then(() => read).then((msg) => {
      if (msg !== undefined) dispatch(msg);
    });
  };
  // One LISTEN per client: postgres.js listens again by itself after a reset (also
  // when the first attempt failed because the database was away), and a second
  // call on the same client would deliver every message twice.
  let listening: Promise<unknown> | undefined;
  source.onReplaced(() => {
    if (listening) listening = source.sql.listen(CHANNEL, deliver).catch(() => {});
  });
  return {
    async publish(msg, opts) {
      const payload = JSON.stringify(msg);
      // Characters are not bytes: 4000 × "€" passes a 4000-character bound as 12 000 bytes.
      const bytes = frameBytes(payload, NOTIFY_MAX_BYTES);
      if (bytes <= NOTIFY_MAX_BYTES) return void await source.sql.notify(CHANNEL, payload);
      if (opts?.large !== "reference") throw new BusPayloadTooLargeError(bytes);
      const [row] = await source.sql<{ id: string }[]>`
        insert into agent_websocket.bus_payloads (payload) values (${payload}) returning id`;
      const envelope: Reference = { ref: Number(row.id), session: msg.session };
      if ("to" in msg) envelope.to = msg.to;
      await source.sql.notify(CHANNEL, JSON.stringify(envelope));
    },
    async subscribe(fn, wants) {
      handlers.push(fn);
      wanted ??= wants;
      listening ??= source.sql.listen(CHANNEL, deliver);
      await listening;
    },
  };
}

/** What a NOTIFY carries for a message sent by reference. */
const Reference = z.object({ ref: z.number(), session: z.string(), to: z.string().optional() });
type Reference = z.infer<typeof Reference>;
