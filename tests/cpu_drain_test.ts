/**
 * The hosted CPU budget: past CPU_BUDGET_SOFT_MS the process takes no new
 * work and hands every session over — `shutdown` + 1012 — only once its
 * answer in flight has ended, so the platform's CPU limit never cuts one.
 */
import { assert, assertEquals } from "./assert.ts";
import { deadline, eventually, startStack, TestClient } from "./helpers.ts";

Deno.test("past the CPU budget, idle sessions are handed over at once and answers finish first", async () => {
  const stack = await startStack(
    {
      CPU_BUDGET_SOFT_MS: "250",
      RESUME_WINDOW_SECONDS: "5",
      LOG_LEVEL: "info",
      // 1000 tokens 3 ms apart take over 3 s, more on a loaded machine: the stack's 5 s total
      // timeout would end the answer with `upstream_timeout`, which is not what this is about.
      UPSTREAM_TOTAL_TIMEOUT_SECONDS: "60",
    },
    { tokenDelayMs: 0 },
  );
  try {
    const tokens = Array.from({ length: 1000 }, (_, i) => `t${i} `);
    stack.sim.when("[long]", { kind: "stream", tokens, gapMs: 3 });
    const idle = await TestClient.open(stack.wsUrl);
    const busy = await TestClient.open(stack.wsUrl);
    const id = busy.client.query("[long] tell me everything");
    await busy.client.waitFor((f) => f.id === id && f.delta !== undefined, "streaming");
    assert(
      !stack.logs.some((l) => l.includes("cpu_budget_exceeded")),
      "the budget is not spent before the answer starts (raise CPU_BUDGET_SOFT_MS here if it is)",
    );
    // The server shares this thread: spending CPU here spends the server's budget.
    const until = performance.now() + 600;
    while (performance.now() < until) Math.sqrt(Math.random());
    await eventually(
      () => stack.logs.some((l) => l.includes('"cpu_budget_exceeded"')),
      "the CPU budget to be spent",
      5_000,
    );
    assert(!busy.client.frames.some((f) => f.id === id && f.done), "mid-answer when it is spent");
    // The idle session goes at once: shutdown, then 1012.
    const bye = await idle.client.waitFor((f) => f.event === "shutdown", "shutdown", 5000);
    assertEquals([bye.reason, bye.reconnect], ["cpu_budget", true]);
    assertEquals((await deadline(idle.client.closed, 5000, "idle close")).code, 1012);
    // A new query on the busy session is refused, retryable; its answer keeps streaming.
    busy.client.send({ type: "query", id: "late", content: "one more" });
    const refused = await busy.client.waitFor((f) => f.id === "late", "late refused");
    assertEquals([refused.code, refused.retryable], ["draining", true]);
    // The answer in flight is not cut: it ends whole, then the socket goes.
    const final = await busy.client.terminal(id, 20_000);
    assertEquals(
      [final.type, final.finish_reason],
      ["response", "stop"],
      `ended whole, not ${final.code}: ${final.message}`,
    );
    assertEquals(final.content, tokens.join(""));
    const after = await busy.client.waitFor((f) => f.event === "shutdown", "shutdown after");
    assert(after.seq > final.seq, "the shutdown comes after the answer");
    assertEquals((await deadline(busy.client.closed, 5000, "busy close")).code, 1012);
    // Someone new is not taken on: shutdown + 1012 at once, no session.
    const late = await TestClient.connect(stack.wsUrl);
    const turnedAway = await late.waitFor((f) => f.event === "shutdown", "turned away");
    assertEquals(turnedAway.seq, 0);
    assertEquals((await deadline(late.closed, 5000, "late close")).code, 1012);
    assert(!late.frames.some((f) => f.event === "connected"), "no session for the newcomer");
    await eventually(() => stack.server.app.sessions.size === 0, "every session let go");
  } finally {
    await stack.close();
  }
});
