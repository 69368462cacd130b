/**
 * A stand-in for a Supabase project's auth server: the JWKS route and
 * `/auth/v1/user`, each counting its requests. The JWKS can be made slow or
 * held until released, to reproduce a key server under load.
 *
 * @module
 */
import { exportJWK, generateKeyPair, type JWTPayload, SignJWT } from "jose";

/** A running stand-in. */
export interface AuthServer {
  url: string;
  privateKey: CryptoKey;
  /** JWKS requests received so far (answered or not). */
  readonly fetches: number;
  /** Requests to `/auth/v1/user` so far. */
  readonly userCalls: number;
  /** Requests to the JWKS that have not been answered yet. */
  readonly waiting: number;
  /** From now on the JWKS is answered only after `release()` (or a close). */
  hold(): void;
  /** Answers every held JWKS request and stops holding. */
  release(): void;
  /** Answers the JWKS with this status from now on (200 again with `failWith(null)`). */
  failWith(status: number | null): void;
  close(): Promise<void>;
}

/** Starts the stand-in with one ES256 key, `key-1`. */
export async function startAuthServer(): Promise<AuthServer> {
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid: "key-1", alg: "ES256", use: "sig" };
  let fetches = 0;
  let userCalls = 0;
  let held: (() => void)[] | null = null;
  let failStatus: number | null = null;
  const release = () => {
    const waiters = held ?? [];
    held = null;
    for (const w of waiters) w();
  };
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    async (req) => {
      const path = new URL(req.url).pathname;
      if (path === "/auth/v1/.well-known/jwks.json") {
        fetches++;
        if (held) await new Promise<void>((resolve) => held!.push(resolve));
        if (failStatus !== null) return new Response("down", { status: failStatus });
        return Response.json({ keys: [jwk] });
      }
      if (path === "/auth/v1/user") {
        userCalls++;
        return Response.json({ id: "user-1" });
      }
      return new Response("not found", { status: 404 });
    },
  );
  return {
    url: `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`,
    privateKey,
    get fetches() {
      return fetches;
    },
    get userCalls() {
      return userCalls;
    },
    get waiting() {
      return held?.length ?? 0;
    },
    hold() {
      held ??= [];
    },
    release,
    failWith(status) {
      failStatus = status;
    },
    async close() {
      release();
      await server.shutdown();
    },
  };
}

/** Claims of a valid access token for `server`, with `over` on top. */
export function claims(server: AuthServer, over: JWTPayload = {}): JWTPayload {
  const now = Math.floor(Date.now() / 1000);
  return {
    sub: "user-1",
    role: "authenticated",
    aud: "authenticated",
    iss: `${server.url}/auth/v1`,
    iat: now,
    exp: now + 3600,
    ...over,
  };
}

/** An ES256 token signed with the stand-in's key (under any `kid`). */
export function es256(server: AuthServer, over: JWTPayload = {}, kid = "key-1"): Promise<string> {
  return new SignJWT(claims(server, over)).setProtectedHeader({ alg: "ES256", kid, typ: "JWT" })
    .sign(server.privateKey);
}

/** An HS256 token signed with `secret`. */
export function hs256(server: AuthServer, secret: string, over: JWTPayload = {}): Promise<string> {
  return new SignJWT(claims(server, over)).setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .sign(new TextEncoder().encode(secret));
}
