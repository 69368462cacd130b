import { assert, assertEquals } from "./assert.ts";
import { eventually, type Frame, isTerminal, startStack, TestClient } from "./helpers.ts";
import { startTcpProxy } from "./tcp_proxy.ts";

/** The frames of a session as a client that resumes sees them, in seq order, no seq-0 frames. */
function sequence(...clients: TestClient[]): Frame[] {
  return clients.flatMap((c) => c.frames).filter((f) => f.seq > 0);
}

Deno.test("a dropped socket resumes inside the window: every frame once, the answer complete", async () => {
  const stack = await startStack({ RESUME_WINDOW_SECONDS: "5" });
  const proxy = startTcpProxy(stack.server.port);
  try {
    const url = `ws://127.0.0.1:${proxy.port}`;
    const { client, connected } = await TestClient.open(url);
    const tokens = Array.from({ length: 40 }, (_, i) => `t${i} `);
    stack.sim.script({ kind: "stream", tokens, gapMs: 5 });
    const id = client.query("keep going while I am away");
    await client.waitFor((f) => f.id === id && f.delta === "t3 ", "a few deltas");
    proxy.cutAll(); // a network drop: no close frame
    await client.closed;
    const lastSeq = client.frames.at(-1)!.seq;
    // Let the generation run on while detached, then come back.
    await eventually(
      () => stack.server.app.sessions.get(connected.session_id)?.turns.inFlight === null,
      "answer finished while away",
    );
    const again = await TestClient.connect(
      `${url}?session_id=${connected.session_id}&last_seq=${lastSeq}`,
    );
    const resumed = await again.waitFor((f) => f.event === "resumed", "resumed");
    assertEquals(resumed.seq, 0);
    assertEquals(resumed.session_id, connected.session_id);
    const final = await again.terminal(id);
    assertEquals(final.content, tokens.join(""));
    assertEquals(resumed.replayed, again.frames.filter((f) => f.seq > 0).length);
    const all = sequence(client, again);
    all.forEach((f, i) => assertEquals(f.seq, i + 1, "gapless, no repeats"));
    const deltas = all.filter((f) => f.id === id && f.delta !== undefined).map((f) => f.delta);
    assertEquals(deltas.join(""), tokens.join(""), "every token exactly once");
    assertEquals(all.filter((f) => f.id === id && isTerminal(f)).length, 1);
    // The resumed session keeps its history and answers live.
    stack.sim.script({ kind: "stream", tokens: ["live"] });
    assertEquals((await again.terminal(again.query("and now?"))).content, "live");
    assertEquals(stack.sim.requests.at(-1)!.body.messages!.length, 4);
    await again.close();
  } finally {
    await proxy.close();
    await stack.close();
  }
});

Deno.test("resuming an unknown or expired session says not_found on a fresh session", async () => {
  const stack = await startStack({ RESUME_WINDOW_SECONDS: "0.1", SWEEP_INTERVAL_SECONDS: "0.02" });
  try {
    const { client, connected } = await TestClient.open(stack.wsUrl);
    await client.close();
    await eventually(() => stack.server.app.sessions.size === 0, "window to end");
    const again = await TestClient.connect(
      `${stack.wsUrl}?session_id=${connected.session_id}&last_seq=1`,
    );
    const fresh = await again.waitFor((f) => f.event === "connected", "fresh session");
    const err = await again.waitFor((f) => f.type === "error", "not_found");
    assertEquals(err.code, "not_found");
    assert(fresh.session_id !== connected.session_id, "never the old id");
    assertEquals([fresh.seq, err.seq], [1, 2]);
    await again.close();
  } finally {
    await stack.close();
  }
});

Deno.test("a replay log trimmed past last_seq answers resume_gap and a fresh session", async () => {
  const stack = await startStack({ RESUME_WINDOW_SECONDS: "5", REPLAY_MAX_FRAMES: "10" });
  try {
    const { client, connected } = await TestClient.open(stack.wsUrl);
    stack.sim.script({ kind: "stream", tokens: Array(30).fill("x") });
    await client.terminal(client.query("fill the log"));
    await client.close();
    const again = await TestClient.connect(
      `${stack.wsUrl}?session_id=${connected.session_id}&last_seq=2`,
    );
    const err = await again.waitFor((f) => f.type === "error", "resume_gap");
    assertEquals(err.code, "resume_gap");
    const fresh = again.frames.find((f) => f.event === "connected")!;
    assert(fresh.session_id !== connected.session_id);
    await again.close();
  } finally {
    await stack.close();
  }
});

Deno.test("a second socket takes a live session over; the first is told and closed with 4002", async () => {
  const stack = await startStack({ RESUME_WINDOW_SECONDS: "5" });
  try {
    const { client: first, connected } = await TestClient.open(stack.wsUrl);
    const second = await TestClient.connect(
      `${stack.wsUrl}?session_id=${connected.session_id}&last_seq=1`,
    );
    await second.waitFor((f) => f.event === "resumed", "resumed");
    const note = await first.waitFor((f) => f.event === "session_taken_over", "taken over");
    assertEquals(note.seq, 0);
    const closed = await first.closed;
    assertEquals(closed.code, 4002);
    // Only the new socket speaks for the session now.
    second.send({ type: "ping", id: "mine" });
    assertEquals((await second.next((f) => f.type === "pong", "pong")).seq, 2);
    assertEquals(stack.server.app.sessions.size, 1);
    await second.close();
  } finally {
    await stack.close();
  }
});

Deno.test("when the resume window ends, the session is freed and its upstream request aborted", async () => {
  const stack = await startStack({ RESUME_WINDOW_SECONDS: "0.2", SWEEP_INTERVAL_SECONDS: "0.02" });
  try {
    const { client } = await TestClient.open(stack.wsUrl);
    stack.sim.script({ kind: "stream", tokens: Array(1000).fill("y"), gapMs: 10 });
    const id = client.query("long");
    await client.waitFor((f) => f.id === id && f.delta !== undefined, "delta");
    await client.close();
    assertEquals(stack.server.app.sessions.size, 1, "kept while the window is open");
    await eventually(() => stack.server.app.sessions.size === 0, "session freed");
    await eventually(() => stack.sim.openStreams === 0, "upstream aborted");
  } finally {
    await stack.close();
  }
});

Deno.test("bad resume parameters are refused with a clear error on a fresh session", async () => {
  const stack = await startStack();
  try {
    const again = await TestClient.connect(`${stack.wsUrl}?session_id=abc&last_seq=-4`);
    const err = await again.waitFor((f) => f.type === "error", "error");
    assertEquals(err.code, "invalid_message");
    assert(err.message.includes("last_seq"));
    await again.close();
  } finally {
    await stack.close();
  }
});

Deno.test("drops at random points never lose or double a frame (raw protocol client)", async () => {
  const stack = await startStack({ RESUME_WINDOW_SECONDS: "10" });
  const proxy = startTcpProxy(stack.server.port);
  const url = `ws://127.0.0.1:${proxy.port}`;
  const rounds = 12;
  try {
    let { client } = await TestClient.open(url);
    const sessionId = client.frames[0].session_id;
    const clients = [client];
    const expected = new Map<string, string>();
    for (let round = 0; round < rounds; round++) {
      const tokens = Array.from({ length: 15 }, (_, i) => `r${round}w${i} `);
      stack.sim.when(`[round ${round}]`, { kind: "stream", tokens, gapMs: 2 });
      const id = client.query(`[round ${round}]`);
      expected.set(id, tokens.join(""));
      // Drop somewhere before, during or after the answer.
      const dropAfter = Math.floor(Math.random() * 20);
      await client.waitFor(
        (f) => f.id === id && (isTerminal(f) || f.delta?.includes(`w${dropAfter} `)),
        "drop point",
      );
      if (round % 3 === 2) client.ws.close(); // sometimes a clean close from the client
      else proxy.cutAll(); // mostly a network drop
      await client.closed;
      const last = sequence(...clients).at(-1)!.seq;
      client = await TestClient.connect(`${url}?session_id=${sessionId}&last_seq=${last}`);
      clients.push(client);
      await client.waitFor((f) => f.event === "resumed", "resumed");
      const seenBefore = clients.slice(0, -1).some((c) =>
        c.frames.some((f) => f.id === id && isTerminal(f))
      );
      if (!seenBefore) await client.terminal(id, 5000);
    }
    const all = sequence(...clients);
    all.forEach((f, i) => assertEquals(f.seq, i + 1, `seq at ${i}`));
    for (const [id, text] of expected) {
      const mine = all.filter((f) => f.id === id);
      assertEquals(mine.filter(isTerminal).length, 1, `one terminal for ${id}`);
      assertEquals(mine.filter((f) => f.delta !== undefined).map((f) => f.delta).join(""), text);
      assertEquals(mine.find(isTerminal)!.content, text);
    }
    await client.close();
  } finally {
    await proxy.close();
    await stack.close();
  }
});
