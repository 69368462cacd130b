/**
 * POST …/notify: another function (a cron job, a database webhook) sends a
 * notification to a session, wherever its socket lives.
 *
 * @module
 */
import { z } from "zod";
import { JsonObject, unstorableText } from "../protocol/frames.ts";
import { BusPayloadTooLargeError } from "../store/bus.ts";
import type { AgentRuntime } from "../agent/runtime.ts";
import { json } from "./respond.ts";

/** The body of POST …/notify. */
export const NotifyBody = z.object({
  session_id: z.string().min(1).max(128),
  event: z.string().min(1).max(64).default("message"),
  content: z.string().max(4000),
  data: JsonObject.optional()
    .refine((d) => d === undefined || JSON.stringify(d).length <= 3000, "data is too large"),
});

/** Compares secrets in time independent of where they differ. */
function timingSafeEqual(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}

/**
 * The route, bound to its secret (null turns it off: 404).
 *
 * @example
 * ```ts ignore
 * const notify = notifyRoute(config.notifySecret, runtime);
 * if (req.method === "POST" && url.pathname.endsWith("/notify")) return notify(req);
 * ```
 */
export function notifyRoute(
  secret: string | null,
  runtime: AgentRuntime,
): (req: Request) => Promise<Response> {
  return async (req) => {
    if (!secret) return json({ error: "The notify route is off: set NOTIFY_SECRET" }, 404);
    if (!timingSafeEqual(req.headers.get("authorization") ?? "", `Bearer ${secret}`)) {
      return json({ error: "unauthorized" }, 401);
    }
    let body: unknown;
    try {
      body = await req.json();
    } catch {
      return json({ error: "Body must be JSON" }, 400);
    }
    const parsed = NotifyBody.safeParse(body);
    if (!parsed.success) {
      return json({
        error: "invalid_body",
        issues: parsed.error.issues.map((i) => ({ path: i.path.join("."), message: i.message })),
      }, 400);
    }
    const unstorable = unstorableText(parsed.data);
    if (unstorable) return json({ error: "invalid_body", issues: [unstorable] }, 400);
    const { session_id, event, content, data } = parsed.data;
    let outcome;
    try {
      outcome = await runtime.notify(session_id, { event, content, data });
    } catch (err) {
      if (!(err instanceof BusPayloadTooLargeError)) throw err;
      return json({
        error: "payload_too_large",
        message:
          `The notification is ${err.bytes} bytes as UTF-8 JSON; at most ${err.limitBytes} ` +
          "can reach a session on another process",
      }, 413);
    }
    if (outcome === "not_found") return json({ error: "not_found" }, 404);
    return json({ delivered: outcome }, outcome === "delivered" ? 200 : 202);
  };
}
