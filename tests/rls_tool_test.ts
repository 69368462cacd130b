/**
 * The documented `list_notes` tool (docs/agents.md, "Reading the user's own
 * rows") run by the real server for signed-in users: `ctx.supabase` sends
 * each user's own token, and the doc's policy on the real Postgres decides
 * which rows come back. PostgREST itself is a stand-in
 * (tests/postgrest_standin.ts); the roles, policy and select are real.
 */
import postgres from "postgres";
import { type JWTPayload, SignJWT } from "jose";
import { assertEquals } from "./assert.ts";
import { type Frame, startStack, TestClient } from "./helpers.ts";
import { DATABASE_URL, dbAvailable } from "./db.ts";
import { ensureSupabaseBasics, startPostgrestStandin } from "./postgrest_standin.ts";
import { notesTools } from "./fixtures/notes_tools.ts";
import type { Scenario } from "../dev/openrouter_simulator.ts";

const SECRET = "rls-test-jwt-secret-0123456789abcdef";
const DOC = new URL("../docs/agents.md", import.meta.url);

function sign(claims: JWTPayload): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .sign(new TextEncoder().encode(SECRET));
}

/** An access token the way Supabase Auth issues one for `sub`. */
function accessToken(issuerBase: string, sub: string): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return sign({
    sub,
    role: "authenticated",
    aud: "authenticated",
    iss: `${issuerBase}/auth/v1`,
    email: `${sub.slice(0, 8)}@example.test`,
    iat: now,
    exp: now + 3600,
  });
}

/** The doc's section on reading the user's rows: its SQL and its tool. */
async function docExample(): Promise<{ schema: string; code: string }> {
  const text = await Deno.readTextFile(DOC);
  const section = text.slice(text.indexOf("**Reading the user's own rows.**"));
  const schema = /```sql\n([\s\S]*?)```/.exec(section)?.[1];
  const code = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
  if (!schema || !code) throw new Error("docs/agents.md lost its list_notes example");
  return { schema, code };
}

function toolFrame(client: TestClient, id: string, type: "tool_call" | "tool_result"): Frame {
  const frames = client.framesOf(id).filter((f) => f.type === type);
  assertEquals(frames.length, 1, `one ${type}`);
  return frames[0];
}

/** The model calls `list_notes`, then answers; one script per query. */
const callsListNotes = (callId: string): Scenario[] => [
  { kind: "stream", toolCalls: [{ id: callId, name: "list_notes", arguments: "{}" }] },
  { kind: "stream", tokens: ["Here are your notes."] },
];

const byBody = (a: { body: string }, b: { body: string }) => a.body.localeCompare(b.body);

Deno.test("docs/agents.md shows the list_notes tool these tests run, character for character", async () => {
  const { code } = await docExample();
  const fixture = await Deno.readTextFile(
    new URL("./fixtures/notes_tools.ts", import.meta.url),
  );
  const inner = /\/\/ docs\/agents.md begin\n([\s\S]*?)\n\s*\/\/ docs\/agents.md end/.exec(
    fixture,
  )![1];
  const dedented = inner.split("\n").map((l) => l.replace(/^ {2}/, "")).join("\n") + "\n";
  assertEquals(code, dedented);
});

Deno.test({
  name: "list_notes through RLS: each signed-in user's tool_result holds their own notes only",
  ignore: !dbAvailable,
  async fn() {
    const { schema } = await docExample();
    const sql = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
    const [alice, bob, carol] = [crypto.randomUUID(), crypto.randomUUID(), crypto.randomUUID()];
    await ensureSupabaseBasics(sql);
    // `notes` is the name the doc's code reads, so a rerun starts from a clean table. The grant
    // is what Supabase's default privileges give every new table in `public`.
    await sql.unsafe(`
      drop table if exists public.notes;
      ${schema}
      grant select on public.notes to authenticated;
    `);
    const rows = [
      { owner: alice, body: "alice: buy milk" },
      { owner: alice, body: "alice: call mum" },
      { owner: bob, body: "bob: fix the bike" },
      { owner: carol, body: "carol: nobody else reads this" },
    ];
    const inserted = await sql<{ id: string; owner: string; body: string }[]>`
      insert into public.notes ${sql(rows)} returning id, owner, body`;
    const notesOf = (owner: string) =>
      inserted.filter((r) => r.owner === owner).map(({ id, body }) => ({ id, body })).sort(byBody);

    const anonKey = await sign({ role: "anon", iss: "supabase" });
    const rest = startPostgrestStandin({ databaseUrl: DATABASE_URL, jwtSecret: SECRET, anonKey });
    const stack = await startStack(
      {
        AUTH_MODE: "supabase",
        SUPABASE_URL: rest.url,
        SUPABASE_ANON_KEY: anonKey,
        JWT_SECRET: SECRET,
      },
      {},
      { agent: { tools: notesTools } },
    );
    const clients: TestClient[] = [];
    try {
      const tokens = new Map<string, string>();
      for (const user of [alice, bob]) {
        const token = await accessToken(rest.url, user);
        tokens.set(user, token);
        const client = await TestClient.connect(stack.wsUrl, [
          "agent-websocket.v1",
          `jwt-${token}`,
        ]);
        await client.waitFor((f) => f.event === "connected", "connected");
        clients.push(client);
      }
      // Both sockets are open at once: each query must still read as its own user.
      for (const [i, user] of [alice, bob].entries()) {
        const client = clients[i];
        stack.sim.script(...callsListNotes(`call_${i}`));
        const id = client.query("What are my notes?");
        const final = await client.terminal(id);
        assertEquals([final.type, final.content], ["response", "Here are your notes."]);
        const result = toolFrame(client, id, "tool_result");
        assertEquals(result.ok, true, JSON.stringify(result));
        assertEquals([...result.result].sort(byBody), notesOf(user));
        // The model was told the same rows, and nobody else's.
        const told = stack.sim.requests.at(-1)!.body.messages!.at(-1)!;
        assertEquals(told.role, "tool");
        assertEquals(JSON.parse(String(told.content)).sort(byBody), notesOf(user));
      }

      // One request per call, with the user's own token: the database, not the tool, filtered.
      assertEquals(
        rest.requests.map((r) => [r.method, r.url, r.status, r.headers.apikey]),
        [alice, bob].map(() => ["GET", "/rest/v1/notes?select=id%2Cbody&limit=20", 200, anonKey]),
      );
      assertEquals(
        rest.requests.map((r) => r.headers.authorization),
        [alice, bob].map((u) => `Bearer ${tokens.get(u)}`),
      );
      const [{ n }] = await sql`select count(*)::int as n from public.notes`;
      assertEquals(n, rows.length, "without RLS (the table owner) every note is there");

      // Without the grant Postgres refuses the read; the tool's error branch tells the model.
      await sql`revoke select on public.notes from authenticated`;
      stack.sim.script(...callsListNotes("call_denied"));
      const denied = clients[0].query("My notes again?");
      await clients[0].terminal(denied);
      const failed = toolFrame(clients[0], denied, "tool_result");
      assertEquals([failed.ok, failed.error], [false, "Could not read notes"]);
      assertEquals(
        rest.requests.at(-1)!.status,
        403,
        "PostgREST answers 403 for a role without the grant",
      );
    } finally {
      for (const c of clients) await c.close();
      await stack.close();
      await rest.close();
      await sql`drop table if exists public.notes`;
      await sql.end({ timeout: 1 });
    }
  },
});

Deno.test("list_notes with auth off: no Supabase client, the model is told to sign in", async () => {
  // A project URL and key are set: it is the missing user, not the config, that leaves ctx.supabase null.
  const anonKey = await sign({ role: "anon", iss: "supabase" });
  const rest = startPostgrestStandin({ databaseUrl: DATABASE_URL, jwtSecret: SECRET, anonKey });
  const stack = await startStack(
    {
      AUTH_MODE: "off",
      SUPABASE_URL: rest.url,
      SUPABASE_ANON_KEY: anonKey,
    },
    {},
    { agent: { tools: notesTools } },
  );
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    stack.sim.script(...callsListNotes("call_guest"));
    const id = client.query("What are my notes?");
    const final = await client.terminal(id);
    assertEquals(final.type, "response");
    const result = toolFrame(client, id, "tool_result");
    assertEquals([result.ok, result.error], [false, "Sign in to read your notes"]);
    const told = stack.sim.requests.at(-1)!.body.messages!.at(-1)!;
    assertEquals([told.role, told.content], ["tool", '{"error":"Sign in to read your notes"}']);
    assertEquals(rest.requests.length, 0, "nothing was read");
    await client.close();
  } finally {
    await stack.close();
    await rest.close();
  }
});
