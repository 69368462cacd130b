/**
 * Per-user limits that mean something when a user's sockets are spread over
 * processes (hosted Supabase runs many isolates): a daily token / credit
 * budget counted from the usage the model reports, and the query rate, both
 * shared through Postgres; in memory, counted in the one process.
 */
import { SignJWT } from "jose";
import postgres from "postgres";
import { assert, assertEquals } from "./assert.ts";
import { DATABASE_URL, dbAvailable } from "./db.ts";
import {
  deadline,
  type Frame,
  isTerminal,
  startStack,
  TEST_API_KEY,
  TestClient,
} from "./helpers.ts";
import { type ServerProcess, startServerProcess } from "./process.ts";
import { startSimulator } from "../dev/openrouter_simulator.ts";
import { slidingWait } from "../supabase/functions/_shared/platform/limits.ts";
import { SharedCounts } from "../supabase/functions/_shared/platform/shared_counts.ts";
import { DailyBudget } from "../supabase/functions/_shared/platform/budget.ts";

const DAY_MS = 86_400_000;
/** Fifty tokens an answer, so two answers pass a budget of 100 and one does not. */
const FIFTY = Array.from({ length: 50 }, (_, i) => `t${i} `);

function nextUtcMidnight(ms: number): number {
  return (Math.floor(ms / DAY_MS) + 1) * DAY_MS;
}

/** Asserts a refusal is `budget_exceeded`, retryable, and says the next UTC midnight. */
function assertBudgetRefusal(f: Frame, before: number, after: number): void {
  assertEquals(
    [f.type, f.code, f.retryable],
    ["error", "budget_exceeded", true],
    JSON.stringify(f),
  );
  const midnight = nextUtcMidnight(before);
  assertEquals(f.resets_at, new Date(midnight).toISOString());
  assert(
    f.retry_after_ms <= midnight - before && f.retry_after_ms >= midnight - after,
    `retry_after_ms ${f.retry_after_ms} runs to midnight`,
  );
}

Deno.test("in memory: two answers use up a daily token budget; the third query is refused until UTC midnight", async () => {
  const stack = await startStack({ USER_DAILY_TOKEN_BUDGET: "100" });
  try {
    stack.sim.when("[spend]", { kind: "stream", tokens: FIFTY });
    const { client } = await TestClient.open(stack.wsUrl);
    const first = await client.terminal(client.query("[spend] one"));
    const second = await client.terminal(client.query("[spend] two"));
    assertEquals([first.type, second.type], ["response", "response"]);
    const used = [first.usage.total_tokens, second.usage.total_tokens];
    assert(used[0] < 100 && used[0] + used[1] >= 100, `usage ${used}`);
    const before = Date.now();
    const third = await client.terminal(client.query("[spend] three"));
    assertBudgetRefusal(third, before, Date.now());
    assertEquals(stack.sim.requests.length, 2, "the refused query never reached the model");
    // A new socket of the same user (the client address, without auth) is no way around it.
    const { client: again } = await TestClient.open(stack.wsUrl);
    const t = Date.now();
    assertBudgetRefusal(await again.terminal(again.query("[spend] four")), t, Date.now());
    await again.close();
    await client.close();
  } finally {
    await stack.close();
  }
});

Deno.test("in memory: a credit budget also stops queries queued behind the answers that used it up", async () => {
  const stack = await startStack({ USER_DAILY_COST_BUDGET: "0.0001" });
  try {
    stack.sim.when("[spend]", { kind: "stream", tokens: FIFTY });
    const { client } = await TestClient.open(stack.wsUrl);
    // All three are admitted at once, while nothing is spent yet.
    const ids = ["one", "two", "three"].map((n) => client.query(`[spend] ${n}`));
    const before = Date.now();
    const [a, b, c] = await Promise.all(ids.map((id) => client.terminal(id, 5000)));
    assertEquals([a.type, b.type], ["response", "response"]);
    assert(a.usage.cost < 0.0001 && a.usage.cost + b.usage.cost >= 0.0001, "two answers pass it");
    assertBudgetRefusal(c, before, Date.now());
    assertEquals(stack.sim.requests.length, 2);
    await client.close();
  } finally {
    await stack.close();
  }
});

Deno.test("sliding minute: the previous minute weighs as much of it as is still within 60 s", () => {
  assertEquals(slidingWait(0, 4, 5, 0), 0);
  assertEquals(slidingWait(0, 5, 5, 10_000), 50_001, "the next minute, nothing left of this one");
  // 10 last minute, 20 s into this one: 10 × 2/3 ≈ 6.7 ≥ 5; below 5 once past 30 s.
  assertEquals(slidingWait(10, 0, 5, 20_000), 10_001);
  // At the start of a minute a burst just before it still counts: no doubling at the edge.
  assert(slidingWait(5, 1, 5, 100) > 0);
});

Deno.test("a budget spent before UTC midnight is whole again after it", () => {
  let now = Date.UTC(2026, 11, 1, 23, 59, 59, 500);
  const budget = new DailyBudget({ tokens: 100, cost: null }, () => now);
  budget.spend("u", { prompt_tokens: 60, completion_tokens: 40, total_tokens: 100 });
  const refusal = budget.check("u");
  assertEquals(refusal?.resetsAt, "2026-12-02T00:00:00.000Z");
  assertEquals(refusal?.retryAfterMs, 500);
  assertEquals(budget.check("someone else"), null, "one user's spending is theirs alone");
  now += 500;
  assertEquals(budget.check("u"), null);
  assertEquals(budget.spent("u"), { tokens: 0, cost: 0 });
});

Deno.test("shared counts: what is being sent counts until settled, and comes back if the send fails", () => {
  const counts = new SharedCounts(1);
  counts.add("u", "m", [3]);
  const sent = counts.takePending();
  counts.add("u", "m", [1]);
  assertEquals(counts.total("u", "m"), [4]);
  counts.restore(sent);
  assertEquals(counts.total("u", "m"), [4], "nothing lost or doubled by a failed send");
  const again = counts.takePending();
  assertEquals(again, [{ key: "u", period: "m", values: [4] }]);
  // Another process added 10 meanwhile: the store says 14.
  counts.settle(again, [{ key: "u", period: "m", values: [14] }]);
  assertEquals(counts.total("u", "m"), [14]);
});

const JWT_SECRET = "quota-test-hs256-secret-0123456789";
const SUPABASE_URL = "http://127.0.0.1:9";

function token(sub: string): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({
    sub,
    aud: "authenticated",
    iss: `${SUPABASE_URL}/auth/v1`,
    role: "authenticated",
    iat: now,
    exp: now + 600,
  }).setProtectedHeader({ alg: "HS256", typ: "JWT" }).sign(new TextEncoder().encode(JWT_SECRET));
}

/** Two server processes on one database and one stand-in; cleans up after. */
async function withTwoProcesses(
  extra: Record<string, string>,
  fn: (a: ServerProcess, b: ServerProcess, sql: postgres.Sql) => Promise<void>,
): Promise<void> {
  const sim = startSimulator({ tokenDelayMs: 1 });
  sim.when("[spend]", { kind: "stream", tokens: FIFTY });
  sim.when("[free]", { kind: "stream", tokens: ["ok"], usage: "none" });
  const env = {
    OPENROUTER_API_KEY: TEST_API_KEY,
    OPENROUTER_BASE_URL: sim.url,
    SESSION_STORE: "postgres",
    DATABASE_URL,
    SWEEP_INTERVAL_SECONDS: "0.2",
    FRAME_FLUSH_MS: "10",
    ...extra,
  };
  const sql = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
  const a = await startServerProcess(env);
  const b = await startServerProcess(env);
  try {
    await fn(a, b, sql);
  } finally {
    await a.kill("SIGTERM");
    await b.kill("SIGTERM");
    await sim.close();
    await sql.end({ timeout: 1 });
  }
}

/** Polls an async condition every 20 ms until it holds, or fails after `ms`. */
async function eventually(check: () => Promise<boolean>, what: string, ms = 5000) {
  await deadline(
    (async () => {
      while (!(await check())) await new Promise((r) => setTimeout(r, 20));
    })(),
    ms,
    what,
  );
}

Deno.test({
  name: "postgres: a user who spent their budget on process A is refused on process B after a sync",
  ignore: !dbAvailable,
  fn: async () => {
    // Without auth the user is the client address: start this day's count afresh.
    const key = "addr:127.0.0.1";
    const cleanup = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
    await cleanup`delete from agent_websocket.usage where user_key = ${key}`;
    await cleanup.end({ timeout: 1 });
    const env = { USER_DAILY_TOKEN_BUDGET: "100", RATE_LIMIT_BURST: "100" };
    await withTwoProcesses(env, async (a, b, sql) => {
      // B serves the user before A's spending: only a sync can tell B about it.
      const { client: onB } = await TestClient.open(b.wsUrl);
      const { client: onA } = await TestClient.open(a.wsUrl);
      const first = await onA.terminal(onA.query("[spend] one"), 5000);
      const second = await onA.terminal(onA.query("[spend] two"), 5000);
      const spent = first.usage.total_tokens + second.usage.total_tokens;
      assert(spent >= 100, `spent ${spent}`);
      await eventually(async () => {
        const [row] = await sql`
          select tokens from agent_websocket.usage
          where user_key = ${key} and day = (now() at time zone 'utc')::date`;
        return Number(row?.tokens ?? 0) === spent;
      }, "A's spending written to Postgres");
      // B learns it within a sync interval or so; until then it still answers (the documented
      // overshoot). Its probes report no usage, so only what A spent can make B refuse.
      let refusal: Frame | undefined;
      const before = Date.now();
      await deadline(
        (async () => {
          while (!refusal) {
            const f = await onB.terminal(onB.query("[free] on B"), 5000);
            if (f.type === "response") await new Promise((r) => setTimeout(r, 50));
            else refusal = f;
          }
        })(),
        5000,
        "B refusing the user",
      );
      assertBudgetRefusal(refusal!, before, Date.now());
      // A new socket on B is refused at its first query.
      const { client: fresh } = await TestClient.open(b.wsUrl);
      const t = Date.now();
      assertBudgetRefusal(await fresh.terminal(fresh.query("[spend] fresh")), t, Date.now());
      await Promise.all([onA.close(), onB.close(), fresh.close()]);
    });
  },
});

Deno.test({
  name: "postgres: a burst split over two processes is held to one user's rate overall",
  ignore: !dbAvailable,
  fn: () =>
    withTwoProcesses({
      AUTH_MODE: "supabase",
      SUPABASE_URL,
      JWT_SECRET,
      // Each process alone would let 4 through at once; together a user gets 1 + 4 a minute.
      RATE_LIMIT_PER_MINUTE: "1",
      RATE_LIMIT_BURST: "4",
    }, async (a, b, sql) => {
      const sub = crypto.randomUUID();
      const protocols = ["agent-websocket.v1", `jwt-${await token(sub)}`];
      const onA = await TestClient.connect(a.wsUrl, protocols);
      await onA.waitFor((f) => f.event === "connected");
      const burstA = Array.from({ length: 4 }, (_, i) => onA.query(`a${i}`));
      const endsA = await Promise.all(burstA.map((id) => onA.terminal(id, 5000)));
      assertEquals(endsA.map((f) => f.type), ["response", "response", "response", "response"]);
      await eventually(async () => {
        const [row] = await sql`
          select coalesce(sum(queries), 0)::int as n from agent_websocket.rate
          where user_key = ${sub}`;
        return row.n === 4;
      }, "A's queries counted in Postgres");

      const onB = await TestClient.connect(b.wsUrl, protocols);
      await onB.waitFor((f) => f.event === "connected");
      const burstB = Array.from({ length: 4 }, (_, i) => onB.query(`b${i}`));
      const endsB = await Promise.all(burstB.map((id) => onB.terminal(id, 5000)));
      const refused = endsB.filter((f) => f.type === "error");
      for (const f of refused) {
        assertEquals([f.code, f.retryable], ["rate_limited", true]);
        assert(f.retry_after_ms > 0 && f.retry_after_ms <= 120_000, `retry ${f.retry_after_ms}`);
      }
      // One more fits the shared limit (a second at a minute's edge); B's own bucket had four.
      assert(refused.length >= 2, `B refused ${refused.length} of 4: ${JSON.stringify(endsB)}`);
      assert(endsB.every(isTerminal));
      await Promise.all([onA.close(), onB.close()]);
    }),
});
