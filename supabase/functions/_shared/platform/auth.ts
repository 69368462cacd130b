/**
 * Authentication of WebSocket connections with Supabase access tokens.
 * Browsers cannot set headers on a WebSocket handshake, so the token comes as
 * a subprotocol (`jwt-<token>`, preferred: URLs get logged) or as `?jwt=`.
 *
 * Asymmetric tokens (ES256/RS256) are verified by supabase-js
 * `auth.getClaims`, which fetches and caches the project's JWKS; legacy HS256
 * tokens with `SUPABASE_JWT_SECRET` (locally, by `jose`). `getClaims` checks
 * the signature and expiry only, so issuer, audience and not-before are
 * checked here.
 *
 * @module
 */
import { createClient, type SupabaseClient } from "@supabase/supabase-js";
import { jwtVerify } from "jose";
import { offeredSubprotocols } from "../protocol/frames.ts";
import { TOKEN_SUBPROTOCOL_PREFIX } from "../protocol/codes.ts";

/** Who a verified token belongs to. */
export interface AuthUser {
  /** The token's `sub`: the Supabase user id. */
  id: string;
  role?: string;
  /** Every claim of the token. */
  claims: Record<string, unknown>;
}

/** The outcome of a verification; `reason` is for logs, never for clients. */
export type AuthResult = { ok: true; user: AuthUser } | { ok: false; reason: string };

/** Verifies one token. */
export interface Verifier {
  verify(token: string): Promise<AuthResult>;
}

/** What {@linkcode createSupabaseVerifier} needs. */
export interface SupabaseAuthOptions {
  supabaseUrl: string;
  /** Any project API key; supabase-js wants one to build a client. */
  apiKey: string;
  /** The legacy HS256 secret; without it HS256 tokens are refused. */
  jwtSecret?: string;
  issuer: string;
  audience: string;
  /** Clock skew tolerated for `exp` and `nbf`, in seconds. */
  leewaySeconds?: number;
}

/**
 * Picks the token a client sent: the `jwt-` subprotocol first, then `?jwt=`.
 *
 * @example
 * ```ts
 * const token = tokenFromRequest(req); // undefined when none was sent
 * ```
 */
export function tokenFromRequest(req: Request): string | undefined {
  const fromProtocol = offeredSubprotocols(req).find((p) => p.startsWith(TOKEN_SUBPROTOCOL_PREFIX));
  if (fromProtocol) return fromProtocol.slice(TOKEN_SUBPROTOCOL_PREFIX.length);
  return new URL(req.url).searchParams.get("jwt") ?? undefined;
}

function decodeSegment(segment: string): Record<string, unknown> | null {
  try {
    const b64 = segment.replace(/-/g, "+").replace(/_/g, "/");
    const value = JSON.parse(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)));
    return typeof value === "object" && value !== null && !Array.isArray(value) ? value : null;
  } catch {
    return null;
  }
}

/** Checks the claims `getClaims` leaves to us. */
function checkClaims(
  claims: Record<string, unknown>,
  opts: SupabaseAuthOptions,
): AuthResult {
  const now = Math.floor(Date.now() / 1000);
  const leeway = opts.leewaySeconds ?? 30;
  if (typeof claims.exp !== "number" || claims.exp + leeway <= now) {
    return { ok: false, reason: "expired" };
  }
  if (typeof claims.nbf === "number" && claims.nbf - leeway > now) {
    return { ok: false, reason: "not_yet_valid" };
  }
  if (claims.iss !== opts.issuer) return { ok: false, reason: "wrong_issuer" };
  const aud = claims.aud;
  if (!(aud === opts.audience || (Array.isArray(aud) && aud.includes(opts.audience)))) {
    return { ok: false, reason: "wrong_audience" };
  }
  if (typeof claims.sub !== "string" || claims.sub === "") {
    return { ok: false, reason: "no_subject" };
  }
  return {
    ok: true,
    user: {
      id: claims.sub,
      role: typeof claims.role === "string" ? claims.role : undefined,
      claims,
    },
  };
}

/**
 * Creates a verifier for a Supabase project's access tokens.
 *
 * @example
 * ```ts
 * const verifier = createSupabaseVerifier({
 *   supabaseUrl: Deno.env.get("SUPABASE_URL")!,
 *   apiKey: Deno.env.get("SUPABASE_ANON_KEY")!,
 *   issuer: `${Deno.env.get("SUPABASE_URL")}/auth/v1`,
 *   audience: "authenticated",
 * });
 * const result = await verifier.verify(token);
 * ```
 */
export function createSupabaseVerifier(opts: SupabaseAuthOptions): Verifier {
  const client: SupabaseClient = createClient(opts.supabaseUrl, opts.apiKey, {
    auth: {
      persistSession: false,
      autoRefreshToken: false,
      detectSessionInUrl: false,
      // supabase-js caches JWKS per storage key, which it derives from the host
      // name alone; the full URL keeps two projects on one host apart.
      storageKey: `agent-websocket:${opts.supabaseUrl}`,
    },
  });
  const secret = opts.jwtSecret ? new TextEncoder().encode(opts.jwtSecret) : undefined;

  return {
    async verify(token) {
      const parts = token.split(".");
      if (token.length > 8192 || parts.length !== 3) return { ok: false, reason: "malformed" };
      const header = decodeSegment(parts[0]);
      if (!header) return { ok: false, reason: "malformed" };
      const alg = header.alg;
      if (alg === "HS256") {
        if (!secret) return { ok: false, reason: "hs256_without_secret" };
        try {
          const { payload } = await jwtVerify(token, secret, {
            algorithms: ["HS256"],
            clockTolerance: opts.leewaySeconds ?? 30,
          });
          return checkClaims(payload as Record<string, unknown>, opts);
        } catch (err) {
          return { ok: false, reason: `hs256: ${(err as Error).name}` };
        }
      }
      // Only the asymmetric algorithms Supabase issues; `none` and the rest are refused
      // before anything is fetched, and a missing kid would make getClaims fall back to
      // a round trip to the auth server.
      if ((alg !== "ES256" && alg !== "RS256") || typeof header.kid !== "string") {
        return { ok: false, reason: `algorithm_not_allowed: ${String(alg)}` };
      }
      try {
        const { data, error } = await client.auth.getClaims(token);
        if (error || !data) return { ok: false, reason: error?.message ?? "invalid" };
        return checkClaims(data.claims as unknown as Record<string, unknown>, opts);
      } catch (err) {
        return { ok: false, reason: `verification_failed: ${(err as Error).message}` };
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
