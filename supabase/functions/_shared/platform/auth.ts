/**
 * Authentication of WebSocket connections with Supabase access tokens.
 * Browsers cannot set headers on a WebSocket handshake, so the token comes as
 * a subprotocol (`jwt-<token>`, preferred: URLs get logged) or as `?jwt=`.
 *
 * Every token is verified here, locally, by `jose`: asymmetric tokens
 * (ES256/RS256) against the project's JWKS, legacy HS256 tokens with
 * `SUPABASE_JWT_SECRET`, with the same claim checks and clock leeway for
 * both. supabase-js `getClaims` is not used: for a `kid` it does not know it
 * refetches the JWKS and then calls `/auth/v1/user`, so any forged header
 * made the auth server do two requests per handshake.
 *
 * The JWKS is fetched once, kept for ten minutes, refetched for an unknown
 * `kid` at most once per cooldown (concurrent refetches share one request),
 * and not retried for a few seconds after a failed fetch. Only verifications
 * that must wait for the network take one of `maxPending` slots, each for at
 * most `timeoutMs`; a token whose key is already known never waits for one,
 * so a flood of forged tokens cannot starve real users.
 *
 * @module
 */
import {
  createRemoteJWKSet,
  customFetch,
  decodeProtectedHeader,
  errors,
  type JWTPayload,
  jwtVerify,
  type JWTVerifyOptions,
} from "jose";
import { offeredSubprotocols } from "../protocol/frames.ts";
import { TOKEN_SUBPROTOCOL_PREFIX } from "../protocol/codes.ts";

/** Who a verified token belongs to. */
export interface AuthUser {
  /** The token's `sub`: the Supabase user id. */
  id: string;
  role?: string;
  /** When the token stops being valid (its `exp`), in milliseconds since the epoch. */
  expiresAt: number;
  /** Every claim of the verified token, as signed. */
  claims: Record<string, unknown>;
}

/**
 * The outcome of a verification; `reason` is for logs, never for clients.
 * `retryable` means the token was not judged (the key server is slow or down,
 * or too many handshakes wait for it): the client should try again shortly
 * rather than be told its token is bad.
 */
export type AuthResult =
  | { ok: true; user: AuthUser }
  | { ok: false; reason: string; retryable?: boolean };

/** Verifies one token. */
export interface Verifier {
  verify(token: string): Promise<AuthResult>;
}

/** A verifier that also says how many verifications wait for the network. */
export interface BoundedVerifier extends Verifier {
  /** Verifications holding a slot now (waiting for the JWKS). */
  readonly pending: number;
}

/** What {@linkcode createSupabaseVerifier} needs. */
export interface SupabaseAuthOptions {
  supabaseUrl: string;
  /** Unused since verification is local; kept so configs stay valid. */
  apiKey?: string;
  /** The legacy HS256 secret; without it HS256 tokens are refused. */
  jwtSecret?: string;
  issuer: string;
  audience: string;
  /** Clock skew tolerated for `exp` and `nbf`, in seconds, for every algorithm. Default 30. */
  leewaySeconds?: number;
  /** Least time between two JWKS fetches caused by an unknown `kid`. Default 30 000. */
  cooldownMs?: number;
  /** How long the JWKS is used before it is fetched again. Default 600 000. */
  cacheMaxAgeMs?: number;
  /** No new JWKS fetch for this long after one failed. Default 5 000. */
  failureBackoffMs?: number;
  /** Verifications that may wait for the JWKS at once; beyond, `busy`. Default 256. */
  maxPending?: number;
  /** Longest a verification waits for the JWKS. Default 5 000. */
  timeoutMs?: number;
}

/**
 * Picks the token a client sent: the `jwt-` subprotocol first, then `?jwt=`.
 *
 * @example
 * ```ts
 * import { tokenFromRequest } from "./auth.ts";
 * const req = new Request("http://h/?jwt=abc");
 * tokenFromRequest(req); // "abc"
 * ```
 */
export function tokenFromRequest(req: Request): string | undefined {
  const fromProtocol = offeredSubprotocols(req).find((p) => p.startsWith(TOKEN_SUBPROTOCOL_PREFIX));
  if (fromProtocol) return fromProtocol.slice(TOKEN_SUBPROTOCOL_PREFIX.length);
  return new URL(req.url).searchParams.get("jwt") ?? undefined;
}

/** The key server could not be asked (failed, or failed a moment ago). */
class JwksUnavailable extends Error {
  override name = "JwksUnavailable";
}

const TIMED_OUT = Symbol("timed out");

function within<T>(promise: Promise<T>, ms: number): Promise<T | typeof TIMED_OUT> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<typeof TIMED_OUT>((resolve) => {
    timer = setTimeout(() => resolve(TIMED_OUT), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function userFrom(payload: JWTPayload): AuthResult {
  if (typeof payload.sub !== "string" || payload.sub === "") {
    return { ok: false, reason: "no_subject" };
  }
  return {
    ok: true,
    user: {
      id: payload.sub,
      role: typeof payload.role === "string" ? payload.role : undefined,
      expiresAt: payload.exp! * 1000,
      claims: { ...payload },
    },
  };
}

function refusal(err: unknown): AuthResult {
  if (err instanceof JwksUnavailable || err instanceof errors.JWKSTimeout) {
    return { ok: false, reason: `jwks_unavailable: ${(err as Error).message}`, retryable: true };
  }
  if (err instanceof errors.JWKSNoMatchingKey) return { ok: false, reason: "unknown_kid" };
  if (err instanceof errors.JWTExpired) return { ok: false, reason: "expired" };
  if (err instanceof errors.JWTClaimValidationFailed) {
    return { ok: false, reason: `claim_${err.claim}_${err.reason}` };
  }
  return { ok: false, reason: (err as Error)?.name ?? "invalid" };
}

/**
 * Creates a verifier for a Supabase project's access tokens.
 *
 * @example
 * ```ts
 * import { createSupabaseVerifier } from "./auth.ts";
 * const verifier = createSupabaseVerifier({
 *   supabaseUrl: "https://abc.supabase.co",
 *   issuer: "https://abc.supabase.co/auth/v1",
 *   audience: "authenticated",
 * });
 * const result = await verifier.verify("not-a-jwt"); // checked locally: nothing is fetched
 * if (!result.ok) console.log(result.reason); // "malformed"
 * ```
 */
export function createSupabaseVerifier(opts: SupabaseAuthOptions): BoundedVerifier {
  const maxPending = opts.maxPending ?? 256;
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const failureBackoffMs = opts.failureBackoffMs ?? 5_000;
  let retryAt = 0;
  const jwks = createRemoteJWKSet(new URL(`${opts.supabaseUrl}/auth/v1/.well-known/jwks.json`), {
    cooldownDuration: opts.cooldownMs ?? 30_000,
    cacheMaxAge: opts.cacheMaxAgeMs ?? 600_000,
    timeoutDuration: timeoutMs,
    // Without this, a key server that is down is asked again on every handshake.
    [customFetch]: async (url, init) => {
      if (performance.now() < retryAt) throw new JwksUnavailable("failed recently");
      try {
        const res = await fetch(url, init);
        if (res.status !== 200) {
          await res.body?.cancel();
          throw new JwksUnavailable(`status ${res.status}`);
        }
        return res;
      } catch (err) {
        retryAt = performance.now() + failureBackoffMs;
        throw err instanceof JwksUnavailable ? err : new JwksUnavailable((err as Error).name);
      }
    },
  });
  const secret = opts.jwtSecret ? new TextEncoder().encode(opts.jwtSecret) : undefined;
  const checks: JWTVerifyOptions = {
    issuer: opts.issuer,
    audience: opts.audience,
    clockTolerance: opts.leewaySeconds ?? 30,
    requiredClaims: ["exp", "sub"],
  };
  let pending = 0;

  /** Whether verifying a token with this `kid` may fetch the JWKS. */
  function needsNetwork(kid: string): boolean {
    if (!jwks.fresh) return true;
    if (jwks.coolingDown) return false;
    return !(jwks.jwks()?.keys.some((k) => k.kid === kid) ?? false);
  }

  async function verifyAsymmetric(token: string): Promise<AuthResult> {
    try {
      const { payload } = await jwtVerify(token, jwks, {
        ...checks,
        algorithms: ["ES256", "RS256"],
      });
      return userFrom(payload);
    } catch (err) {
      return refusal(err);
    }
  }

  return {
    get pending() {
      return pending;
    },
    async verify(token) {
      if (token.length > 8192 || token.split(".").length !== 3) {
        return { ok: false, reason: "malformed" };
      }
      let header;
      try {
        header = decodeProtectedHeader(token);
      } catch {
        return { ok: false, reason: "malformed" };
      }
      if (header.alg === "HS256") {
        if (!secret) return { ok: false, reason: "hs256_without_secret" };
        try {
          const { payload } = await jwtVerify(token, secret, { ...checks, algorithms: ["HS256"] });
          return userFrom(payload);
        } catch (err) {
          return refusal(err);
        }
      }
      // Only the asymmetric algorithms Supabase issues; `none` and the rest are
      // refused before anything is fetched.
      if ((header.alg !== "ES256" && header.alg !== "RS256") || typeof header.kid !== "string") {
        return { ok: false, reason: `algorithm_not_allowed: ${String(header.alg)}` };
      }
      if (!needsNetwork(header.kid)) return verifyAsymmetric(token);
      if (pending >= maxPending) return { ok: false, reason: "busy", retryable: true };
      pending++;
      try {
        const result = await within(verifyAsymmetric(token), timeoutMs);
        return result === TIMED_OUT ? { ok: false, reason: "timeout", retryable: true } : result;
      } finally {
        pending--;
      }
    },
  };
}

/**
 * A stable, non-identifying per-user id for the upstream's abuse isolation
 * (OpenRouter's `user`): a hash of the user id, never an email.
 *
 * @example
 * ```ts
 * await upstreamUserId("4f1c…"); // "u_9b2e…"
 * ```
 */
export async function upstreamUserId(userId: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(userId));
  const hex = [...new Uint8Array(digest).slice(0, 16)]
    .map((b) => b.toString(16).padStart(2, "0"))
    .join("");
  return `u_${hex}`;
}
