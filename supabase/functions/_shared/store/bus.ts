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
  publish(msg: BusMessage): Promise<void>;
  /** Starts listening; resolves once the subscription is active. */
  subscribe(fn: (msg: BusMessage) => void): Promise<void>;
}

/**
 * A bus on the store's Postgres client.
 *
 * @example
 * ```ts
 * const bus = createPgBus(store.sql);
 * await bus.subscribe((msg) => console.log(msg.kind));
 * await bus.publish({ kind: "released", session: "s1", from: "me" });
 * ```
 */
export function createPgBus(sql: postgres.Sql): Bus {
  return {
    async publish(msg) {
      // NOTIFY payloads are limited to 8000 bytes; the notify route bounds content below that.
      await sql.notify(CHANNEL, JSON.stringify(msg));
    },
    async subscribe(fn) {
      await sql.listen(CHANNEL, (payload) => {
        let parsed;
        try {
          parsed = BusMessage.safeParse(JSON.parse(payload));
        } catch {
          return;
        }
        if (parsed.success) fn(parsed.data);
      });
    },
  };
}
