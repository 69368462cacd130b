/**
 * The checks a WebSocket upgrade passes, as small steps run in order — origin,
 * capacity, authentication, per-user connections — each of which may answer
 * the request itself (a refusal) or let it through. A step that takes a slot
 * registers how to give it back, so a refusal later in the line, a failed
 * upgrade or a socket that never opens cannot leak it.
 *
 * @module
 */
import type { Logger } from "../platform/log.ts";
import type { UserLimits } from "../platform/limits.ts";
import { tokenFromRequest, upstreamUserId, type Verifier } from "../platform/auth.ts";
import { CLOSE, SUBPROTOCOL } from "../protocol/codes.ts";
import { offeredSubprotocols } from "../protocol/frames.ts";
import { closeQuietly, sendSocketFrame } from "../session/socket.ts";
import type { Identity } from "../agent/runtime.ts";
import { json } from "./respond.ts";

/** What the steps learn about one upgrade. */
export interface Upgrade {
  req: Request;
  /** Set by the authentication step. */
  identity?: Identity;
  /** The client's address, when the server knows it. */
  address?: string;
  /** Gives back what earlier steps took; runs once, when the socket ends or is refused. */
  cleanups: (() => void)[];
}

/** One check: a Response refuses the upgrade; nothing lets it through. */
export type UpgradeStep = (u: Upgrade) => Response | void | Promise<Response | void>;

/**
 * Runs the steps in order; the first Response wins and gives back every slot.
 *
 * @example
 * ```ts ignore
 * const refused = await runSteps([checkOrigin(["https://app.example"], log)], upgrade);
 * ```
 */
export async function runSteps(steps: UpgradeStep[], u: Upgrade): Promise<Response | undefined> {
  for (const step of steps) {
    let answer: Response | void;
    try {
      answer = await step(u);
    } catch (err) {
      release(u);
      throw err;
    }
    if (answer) {
      release(u);
      return answer;
    }
  }
  return undefined;
}

/** Gives back every slot the steps took, once. */
export function release(u: Upgrade): void {
  for (const fn of u.cleanups.splice(0)) fn();
}

/**
 * Accepts the upgrade, selecting our subprotocol when offered. The token
 * subprotocol is never selected: echoing it would put it in responses.
 *
 * @example
 * ```ts ignore
 * const { socket, response } = acceptSocket(req, 30);
 * ```
 */
export function acceptSocket(
  req: Request,
  idleTimeout: number,
): { socket: WebSocket; response: Response } {
  return Deno.upgradeWebSocket(req, {
    protocol: offeredSubprotocols(req).includes(SUBPROTOCOL) ? SUBPROTOCOL : undefined,
    idleTimeout,
  });
}

/**
 * Refuses after the upgrade: browsers cannot read an HTTP status from a
 * failed handshake, but they can read a close code, and the SDK stops
 * retrying on 4001 / 4029. No session is created.
 *
 * @example
 * ```ts ignore
 * return refuseSocket(req, 30, CLOSE.unauthorized, "unauthorized", "A token is required");
 * ```
 */
export function refuseSocket(
  req: Request,
  idleTimeout: number,
  close: number,
  code: string,
  message: string,
): Response {
  const { socket, response } = acceptSocket(req, idleTimeout);
  socket.addEventListener("open", () => {
    sendSocketFrame(socket, { type: "error", code, message, retryable: false });
    closeQuietly(socket, close, code === "unauthorized" ? "Unauthorized" : "Too many connections");
  });
  return response;
}

/**
 * Refuses browsers from origins not on the list (403 before the upgrade).
 * An empty list allows every origin.
 *
 * @example
 * ```ts ignore
 * const step = checkOrigin(["https://app.example.com"], log);
 * ```
 */
export function checkOrigin(allowed: string[], log: Logger): UpgradeStep {
  return ({ req }) => {
    const origin = req.headers.get("origin");
    if (!origin || allowed.length === 0 || allowed.includes(origin)) return;
    log.info("origin_refused", { origin: origin.slice(0, 200) });
    return new Response("Origin not allowed", { status: 403 });
  };
}

/**
 * Counts every upgrade from here until its socket ends against `max`
 * (503 when full), pending authentication included.
 *
 * @example
 * ```ts ignore
 * const open = { count: 0 };
 * const step = checkCapacity(open, 1000, log);
 * ```
 */
export function checkCapacity(open: { count: number }, max: number, log: Logger): UpgradeStep {
  return (u) => {
    if (open.count >= max) {
      log.warn("connection_limit", { open: open.count });
      return new Response("Too many connections", {
        status: 503,
        headers: { "retry-after": "5" },
      });
    }
    open.count++;
    u.cleanups.push(() => open.count--);
  };
}

/**
 * Verifies the access token (subprotocol `jwt-<token>` or `?jwt=`); refuses
 * with an `unauthorized` error and close 4001.
 *
 * @example
 * ```ts ignore
 * const step = authenticate(verifier, 30, log);
 * ```
 */
export function authenticate(verifier: Verifier, idleTimeout: number, log: Logger): UpgradeStep {
  return async (u) => {
    const token = tokenFromRequest(u.req);
    const result = token
      ? await verifier.verify(token)
      : { ok: false as const, reason: "no_token" };
    if (!result.ok && result.retryable) {
      // The token was not judged (key server slow or down): try again, not "bad token".
      log.warn("auth_unavailable", { reason: result.reason });
      return json({ error: "auth_unavailable" }, 503, { "retry-after": "1" });
    }
    if (!result.ok || !token) {
      log.info("auth_refused", { reason: result.ok ? "no_token" : result.reason });
      return refuseSocket(
        u.req,
        idleTimeout,
        CLOSE.unauthorized,
        "unauthorized",
        "A valid Supabase access token is required",
      );
    }
    u.identity = { user: result.user, token, upstreamUser: await upstreamUserId(result.user.id) };
  };
}

/**
 * Holds one of the user's connection slots until the socket ends; refuses
 * with `too_many_connections` and close 4029 past the limit.
 *
 * @example
 * ```ts ignore
 * const step = limitPerUser(limits, 5, 30, log);
 * ```
 */
export function limitPerUser(
  limits: UserLimits,
  max: number,
  idleTimeout: number,
  log: Logger,
): UpgradeStep {
  return (u) => {
    const id = u.identity?.user.id;
    if (id === undefined) return;
    if (!limits.acquire(id)) {
      log.info("user_connection_limit", { user: u.identity?.upstreamUser });
      return refuseSocket(
        u.req,
        idleTimeout,
        CLOSE.tooManyConnections,
        "too_many_connections",
        `At most ${max} connections per user`,
      );
    }
    u.cleanups.push(() => limits.release(id));
  };
}
