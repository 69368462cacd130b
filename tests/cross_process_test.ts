import { assert, assertEquals } from "./assert.ts";
import { DATABASE_URL, dbAvailable } from "./db.ts";
import postgres from "postgres";
import { deadline, isTerminal, TestClient } from "./helpers.ts";
import { durableEnv, type ServerProcess, startServerProcess, withTwoProcesses } from "./process.ts";
import { type Simulator, startSimulator } from "../dev/openrouter_simulator.ts";

const NOTIFY_SECRET = "notify-secret-for-tests-0123456789";

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

/** Two processes on one database, /notify open to the tests. */
const withTwo = (fn: (sim: Simulator, a: ServerProcess, b: ServerProcess) => Promise<void>) =>
  withTwoProcesses(fn, { NOTIFY_SECRET });

Deno.test({
  name: "postgres: a server killed mid-answer; another process resumes with nothing lost",
  ignore: !dbAvailable,
  fn: () =>
    withTwo(async (sim, a, b) => {
      const { client, connected } = await TestClient.open(a.wsUrl);
      sim.when("[first]", { kind: "stream", tokens: ["remember ", "the ", "word ", "banana"] });
      const first = client.query("[first]");
      await client.terminal(first);
      sim.when("[second]", {
        kind: "stream",
        tokens: Array.from({ length: 200 }, (_, i) => `w${i} `),
        gapMs: 10,
      });
      const second = client.query("[second]");
      await client.waitFor((f) => f.id === second && f.delta === "w20 ", "streaming");
      await a.kill("SIGKILL"); // no goodbye, no final flush
      await client.closed;
      const lastSeq = client.frames.at(-1)!.seq;

      const again = await TestClient.connect(
        `${b.wsUrl}?session_id=${connected.session_id}&last_seq=${lastSeq}`,
      );
      const resumed = await again.waitFor((f) => f.event === "resumed", "resumed on B", 8000);
      assertEquals(resumed.session_id, connected.session_id);
      const interrupted = await again.terminal(second, 5000);
      assertEquals([interrupted.type, interrupted.code, interrupted.retryable], [
        "error",
        "interrupted",
        true,
      ]);
      // The client's view: every seq once, no gap, exactly one terminal per query.
      const all = [...client.frames, ...again.frames].filter((f) => f.seq > 0);
      all.forEach((f, i) => assertEquals(f.seq, i + 1, `seq at ${i}`));
      for (const id of [first, second]) {
        assertEquals(all.filter((f) => f.id === id && isTerminal(f)).length, 1, id);
      }
      // The conversation goes on with its full history.
      sim.when("[third]", { kind: "stream", tokens: ["banana!"] });
      const third = again.query("[third] what was the word?");
      assertEquals((await again.terminal(third, 5000)).content, "banana!");
      const messages = sim.requests.at(-1)!.body.messages!;
      assert(
        messages.some((m) => m.role === "assistant" && m.content === "remember the word banana"),
        `history carried over: ${JSON.stringify(messages)}`,
      );
      await again.close();
    }),
});

Deno.test({
  name: "postgres: resuming on another live process hands the session over losslessly",
  ignore: !dbAvailable,
  fn: () =>
    withTwo(async (_sim, a, b) => {
      const { client, connected } = await TestClient.open(a.wsUrl);
      const done = client.query("a finished answer");
      const answer = await client.terminal(done);
      const lastSeq = client.frames.at(-1)!.seq;
      const again = await TestClient.connect(
        `${b.wsUrl}?session_id=${connected.session_id}&last_seq=${lastSeq - 3}`,
      );
      await again.waitFor((f) => f.event === "resumed", "resumed on B", 8000);
      const note = await client.waitFor((f) => f.event === "session_taken_over", "handover");
      assertEquals(note.seq, 0);
      assertEquals((await client.closed).code, 4002);
      // The three frames the client claimed not to have come back, byte for byte.
      await again.waitFor((f) => f.seq === lastSeq, "the replay");
      const replayed = again.frames.filter((f) => f.seq > 0);
      assertEquals(replayed.map((f) => f.seq), [lastSeq - 2, lastSeq - 1, lastSeq]);
      assertEquals(replayed.at(-1), answer);
      again.send({ type: "ping", id: "on-b" });
      assertEquals((await again.next((f) => f.type === "pong", "pong")).seq, lastSeq + 1);
      await again.close();
    }),
});

Deno.test({
  name: "postgres: POST /notify on one process reaches a socket on another",
  ignore: !dbAvailable,
  fn: () =>
    withTwo(async (_sim, a, b) => {
      const { client, connected } = await TestClient.open(a.wsUrl);
      // Wait until the session is durable, so B can find it.
      client.send({ type: "ping" });
      await client.next((f) => f.type === "pong", "pong");
      const post = (url: string, body: unknown, secret = NOTIFY_SECRET) =>
        fetch(`${url}/functions/v1/agent_websocket/notify`, {
          method: "POST",
          headers: { authorization: `Bearer ${secret}`, "content-type": "application/json" },
          body: JSON.stringify(body),
        });
      const body = {
        session_id: connected.session_id,
        content: "Your report is ready",
        event: "job_done",
        data: { job: 7 },
      };
      let res = await post(b.url, body);
      // 404 until A's first batch (written every 10 ms) has made the session visible to B.
      for (let i = 0; res.status === 404 && i < 20; i++) {
        await res.body?.cancel();
        await new Promise((r) => setTimeout(r, 50));
        res = await post(b.url, body);
      }
      assertEquals([res.status, await res.json()], [202, { delivered: "forwarded" }]);
      const note = await client.waitFor((f) => f.event === "job_done", "notification", 5000);
      assertEquals([note.content, note.job], ["Your report is ready", 7]);
      const bad = await post(
        b.url,
        { session_id: connected.session_id, content: "x" },
        "wrong-secret-0000000000",
      );
      assertEquals(bad.status, 401);
      await bad.body?.cancel();
      const missing = await post(a.url, { session_id: "nope", content: "x" });
      assertEquals(missing.status, 404);
      await missing.body?.cancel();
      await client.close();
    }),
});

for (const signal of ["SIGKILL", "SIGTERM"] as const) {
  Deno.test({
    name: `postgres: an approval waiting when its process gets ${signal} is granted on another`,
    ignore: !dbAvailable,
    fn: async () => {
      const sim = startSimulator({ tokenDelayMs: 2 });
      const fixture = new URL("./fixtures/approval_agent.ts", import.meta.url).pathname;
      const a = await startServerProcess(durableEnv(sim.url), fixture);
      const b = await startServerProcess(durableEnv(sim.url), fixture);
      const sql = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
      try {
        const { client, connected } = await TestClient.open(a.wsUrl);
        sim.script(
          {
            kind: "stream",
            tokens: ["Deleting. "],
            toolCalls: [{ id: "del_1", name: "delete_file", arguments: '{"path":"/tmp/a"}' }],
          },
          { kind: "stream", tokens: ["Done."] },
        );
        const id = client.query("delete /tmp/a");
        const call = await client.waitFor((f) => f.type === "tool_call", "tool_call on A");
        assertEquals(call.needs_approval, true);
        // Written down before the process goes (a flush is 10 ms here).
        await eventually(async () => {
          const [row] = await sql`
            select suspended from agent_websocket.sessions where id = ${connected.session_id}`;
          return row?.suspended?.query?.id === id;
        }, "the waiting turn to be durable");
        await a.kill(signal);
        await client.closed;
        const lastSeq = client.frames.filter((f) => f.seq > 0).at(-1)!.seq;
        const again = await TestClient.connect(
          `${b.wsUrl}?session_id=${connected.session_id}&last_seq=${lastSeq}`,
        );
        await again.waitFor((f) => f.event === "resumed", "resumed on B", 8000);
        again.send({ type: "approval", id, tool_call_id: "del_1", approved: true });
        const final = await again.terminal(id, 8000);
        assertEquals([final.type, final.content], ["response", "Deleting. Done."]);
        const result = again.frames.find((f) => f.type === "tool_result")!;
        assertEquals(result.ok, true);
        assertEquals(result.result.deleted, "/tmp/a");
        const all = [...client.frames, ...again.frames].filter((f) => f.seq > 0);
        all.forEach((f, i) => assertEquals(f.seq, i + 1, `seq at ${i}`));
        assertEquals(all.filter((f) => f.id === id && isTerminal(f)).length, 1, "one terminal");
        assertEquals(all.filter((f) => f.type === "tool_result").length, 1, "one tool_result");
        assertEquals(sim.requests.length, 2, "the model was asked once more, by B");
        await eventually(async () => {
          const [row] = await sql`
            select suspended from agent_websocket.sessions where id = ${connected.session_id}`;
          return row.suspended === null;
        }, "nothing to wait for any more");
        await again.close();
      } finally {
        await sql.end({ timeout: 1 });
        await a.kill("SIGTERM");
        await b.kill("SIGTERM");
        await sim.close();
      }
    },
  });
}

Deno.test({
  name: "postgres: with only SUPABASE_DB_URL set, sessions are durable (SESSION_STORE=auto)",
  ignore: !dbAvailable,
  fn: async () => {
    const server = await startServerProcess({
      SUPABASE_DB_URL: DATABASE_URL,
      OPENROUTER_API_KEY: "",
    });
    try {
      const health = await (await fetch(`${server.url}/health`)).json();
      assertEquals([health.store.kind, health.store.state], ["postgres", "ok"]);
      const started = server.lines.find((l) => l.includes('"server_started"'))!;
      assertEquals(JSON.parse(started).store, "postgres");
    } finally {
      await server.kill("SIGTERM");
    }
  },
});
