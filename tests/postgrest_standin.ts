/**
 * A stand-in for the PostgREST of a Supabase project (`/rest/v1`), for the
 * reads `supabase-js` makes with `.from(table).select(cols).limit(n)`.
 * PostgREST is a boundary we do not own and cannot install here (not in
 * Debian; the npm package downloads a binary at install time), so this does
 * what it does for such a request, on the real Postgres: check the `apikey`
 * (as Supabase's gateway does), verify the bearer JWT (HS256), then in one
 * read-only transaction switch to the token's role, publish its claims as
 * `request.jwt.claims` and run the select — so the table's Row Level
 * Security policies decide what comes back, exactly as in production.
 *
 * Anything else (filters, ordering, writes, embedding) is answered with a
 * PostgREST-style error rather than guessed at.
 *
 * @module
 */
import { errors as joseErrors, jwtVerify } from "jose";
import postgres from "postgres";

/** One request as it arrived, for tests that check what the client sent. */
export interface RecordedRequest {
  method: string;
  /** Path and query string, e.g. `/rest/v1/notes?select=id%2Cbody&limit=20`. */
  url: string;
  headers: Record<string, string>;
  /** The HTTP status it was answered with. */
  status: number;
}

/** A running stand-in. */
export interface PostgrestStandin {
  /** The project URL to give `supabase-js` (the REST API is under `/rest/v1`). */
  url: string;
  /** Every request so far, oldest first. */
  readonly requests: RecordedRequest[];
  close(): Promise<void>;
}

/** How to start one. */
export interface PostgrestStandinOptions {
  /** The real database the selects run on; it connects as a role allowed to switch roles. */
  databaseUrl: string;
  /** The project's JWT secret (HS256), as PostgREST's `jwt-secret`. */
  jwtSecret: string;
  /** The `apikey` the gateway accepts (the anon key). */
  anonKey: string;
  /** Roles a token may name in its `role` claim (the authenticator's grants). */
  roles?: string[];
  /** The schemas exposed, as PostgREST's `db-schemas`; the first is the default. */
  schemas?: string[];
}

/** A PostgREST error body: `{code, details, hint, message}`. */
function pgrstError(
  status: number,
  code: string,
  message: string,
  extra: { details?: string | null; hint?: string | null; headers?: HeadersInit } = {},
): Response {
  return Response.json(
    { code, details: extra.details ?? null, hint: extra.hint ?? null, message },
    { status, headers: extra.headers },
  );
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** PostgREST's select syntax, reduced to plain column names and `*`. */
function parseSelect(raw: string | null): string[] | null {
  // Whitespace outside quotes is dropped by the client already; PostgREST ignores it too.
  const cols = (raw ?? "*").replace(/\s+/g, "").split(",");
  if (cols.length === 1 && cols[0] === "*") return cols;
  return cols.every((c) => IDENT.test(c)) ? cols : null;
}

/** A Postgres error as PostgREST answers it (status per its error table). */
function fromPostgres(err: postgres.PostgresError, role: string, anonRole: string): Response {
  const status: Record<string, number> = {
    "42P01": 404, // undefined_table
    "42703": 400, // undefined_column
    "42883": 404, // undefined_function
  };
  let code = status[err.code];
  if (err.code === "42501") code = role === anonRole ? 401 : 403; // insufficient_privilege
  return pgrstError(code ?? 500, err.code, err.message, {
    details: err.detail ?? null,
    hint: err.hint ?? null,
  });
}

/**
 * Starts the stand-in on a random local port.
 *
 * @example
 * ```ts ignore
 * const rest = startPostgrestStandin({ databaseUrl, jwtSecret, anonKey });
 * const db = createClient(rest.url, anonKey, {
 *   global: { headers: { Authorization: `Bearer ${userToken}` } },
 * });
 * const { data } = await db.from("notes").select("id, body").limit(20);
 * await rest.close();
 * ```
 */
export function startPostgrestStandin(opts: PostgrestStandinOptions): PostgrestStandin {
  const sql = postgres(opts.databaseUrl, { max: 4, onnotice: () => {} });
  const secret = new TextEncoder().encode(opts.jwtSecret);
  const roles = opts.roles ?? ["anon", "authenticated"];
  const anonRole = "anon";
  const schemas = opts.schemas ?? ["public"];
  const requests: RecordedRequest[] = [];

  async function handle(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const match = /^\/rest\/v1\/([^/]+)$/.exec(url.pathname);
    if (!match) return pgrstError(404, "PGRST125", `Invalid path specified in request URL`);

    // Supabase's gateway refuses a request without a known key before PostgREST sees it.
    const apikey = req.headers.get("apikey") ?? url.searchParams.get("apikey");
    if (!apikey) {
      return Response.json({
        message: "No API key found in request",
        hint: "No `apikey` request header or url param was found.",
      }, { status: 401 });
    }
    if (apikey !== opts.anonKey) {
      return Response.json({ message: "Invalid API key" }, { status: 401 });
    }

    if (req.method !== "GET" && req.method !== "HEAD") {
      return pgrstError(405, "PGRST000", `The stand-in only reads; got ${req.method}`);
    }
    const schema = req.headers.get("accept-profile") ?? schemas[0];
    if (!schemas.includes(schema)) {
      return pgrstError(406, "PGRST106", `The schema must be one of the following: ${schemas}`);
    }

    const bearer = /^Bearer (.+)$/i.exec(req.headers.get("authorization") ?? "")?.[1];
    let claims: Record<string, unknown> = { role: anonRole };
    if (bearer) {
      try {
        claims = (await jwtVerify(bearer, secret, { algorithms: ["HS256"] })).payload;
      } catch (err) {
        const expired = err instanceof joseErrors.JWTExpired;
        return pgrstError(
          401,
          expired ? "PGRST303" : "PGRST301",
          expired ? "JWT expired" : "JWSError JWSInvalidSignature",
          {
            headers: { "WWW-Authenticate": `Bearer error="invalid_token"` },
          },
        );
      }
    }
    const role = typeof claims.role === "string" ? claims.role : anonRole;
    if (!roles.includes(role)) {
      return pgrstError(401, "42501", `permission denied to set role "${role}"`);
    }

    const table = decodeURIComponent(match[1]);
    const cols = parseSelect(url.searchParams.get("select"));
    if (!IDENT.test(table) || !cols) {
      return pgrstError(400, "PGRST100", "The stand-in reads plain columns of one table");
    }
    const limit = url.searchParams.get("limit");
    const offset = url.searchParams.get("offset");
    for (const key of url.searchParams.keys()) {
      if (!["select", "limit", "offset", "apikey"].includes(key)) {
        return pgrstError(400, "PGRST100", `The stand-in does not support "${key}"`);
      }
    }
    if ((limit !== null && !/^\d+$/.test(limit)) || (offset !== null && !/^\d+$/.test(offset))) {
      return pgrstError(400, "PGRST100", "limit and offset must be non-negative integers");
    }

    try {
      const body = await sql.begin("read only", async (tx) => {
        // What PostgREST does per request: the token's role and claims, local to this transaction.
        await tx`select set_config('role', ${role}, true),
                        set_config('request.jwt.claims', ${JSON.stringify(claims)}, true),
                        set_config('request.method', ${req.method}, true),
                        set_config('request.path', ${url.pathname}, true)`;
        const columns = cols[0] === "*" ? tx`*` : tx(cols);
        const [row] = await tx`
          select coalesce(json_agg(t), '[]'::json)::text as body
          from (
            select ${columns} from ${tx(schema)}.${tx(table)}
            ${limit === null ? tx`` : tx`limit ${Number(limit)}`}
            ${offset === null ? tx`` : tx`offset ${Number(offset)}`}
          ) t`;
        return row.body as string;
      });
      const count = (JSON.parse(body) as unknown[]).length;
      const start = Number(offset ?? 0);
      return new Response(req.method === "HEAD" ? null : body, {
        headers: {
          "content-type": "application/json; charset=utf-8",
          "content-range": count === 0 ? "*/*" : `${start}-${start + count - 1}/*`,
        },
      });
    } catch (err) {
      if (err instanceof postgres.PostgresError) return fromPostgres(err, role, anonRole);
      throw err;
    }
  }

  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    async (req) => {
      const res = await handle(req).catch((err) =>
        pgrstError(500, "PGRST000", `stand-in failure: ${String(err).slice(0, 200)}`)
      );
      requests.push({
        method: req.method,
        url: new URL(req.url).pathname + new URL(req.url).search,
        headers: Object.fromEntries(req.headers),
        status: res.status,
      });
      return res;
    },
  );

  return {
    url: `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`,
    requests,
    async close() {
      await server.shutdown();
      await sql.end({ timeout: 1 });
    },
  };
}

/**
 * Creates in a database what every Supabase project has and RLS policies
 * lean on: the `anon` and `authenticated` roles and `auth.uid()` (the
 * token's `sub`, read from `request.jwt.claims` as Supabase's own does).
 * Safe to run again and alongside another run (roles are cluster-wide).
 *
 * @example
 * ```ts ignore
 * const sql = postgres(DATABASE_URL);
 * await ensureSupabaseBasics(sql);
 * ```
 */
export async function ensureSupabaseBasics(sql: postgres.Sql): Promise<void> {
  for (const role of ["anon", "authenticated"]) {
    // Another test run may create the role between a check and a create.
    await sql.unsafe(`
      do $$ begin
        if not exists (select from pg_roles where rolname = '${role}') then
          create role ${role} nologin noinherit;
        end if;
      exception when duplicate_object or unique_violation then null;
      end $$`);
  }
  await sql.unsafe(`
    create schema if not exists auth;
    create or replace function auth.uid() returns uuid language sql stable as $$
      select nullif(
        coalesce(
          current_setting('request.jwt.claim.sub', true),
          (current_setting('request.jwt.claims', true)::jsonb ->> 'sub')
        ),
        ''
      )::uuid
    $$;
    grant usage on schema auth to anon, authenticated;
    grant usage on schema public to anon, authenticated;
  `);
}
