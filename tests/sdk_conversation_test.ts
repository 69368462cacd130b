// The SDK in a conversation, against the real server: several clients on one conversation see
// one answer stream with one numbering, a client that drops resumes on its own while the others
// go on, presence is counted, client tools run where they were declared, and the memory
// commands answer typed.
import { AgentClient, type ServerFrame } from "../client/mod.ts";
import { startSimulator } from "../dev/openrouter_simulator.ts";
import { assert, assertEquals } from "./assert.ts";
import { DATABASE_URL, dbAvailable } from "./db.ts";
import { deadline, eventually, startStack } from "./helpers.ts";
import { durableEnv, startServerProcess } from "./process.ts";
import { startTcpProxy } from "./tcp_proxy.ts";

const FAST = {
  reconnect: { initialDelayMs: 20, maxDelayMs: 100, factor: 2, maxAttempts: 50 },
  connectTimeoutMs: 2000,
};

/** Every numbered frame a client got, in order. */
function record(client: AgentClient): ServerFrame[] {
  const frames: ServerFrame[] = [];
  client.on("frame", (f) => {
    if (f.seq > 0) frames.push(f);
  });
  return frames;
}

/** The text of query `id` as the response events streamed it. */
function streamedText(frames: ServerFrame[], id: string): string {
  return frames.filter((f) => f.type === "response" && f.id === id && !f.done)
    .map((f) => (f as { delta?: string }).delta ?? "").join("");
}

/** Seqs strictly increase by one from the first: no gap, no repeat. */
function assertGapless(frames: ServerFrame[], what: string) {
  const seqs = frames.map((f) => f.seq);
  for (let i = 1; i < seqs.length; i++) {
    if (seqs[i] !== seqs[i - 1] + 1) {
      throw new Error(`${what}: seq ${seqs[i - 1]} then ${seqs[i]} (all: ${seqs.join(",")})`);
    }
  }
}

Deno.test("sdk conversation: two clients see the same answer stream with the same seq, and presence", async () => {
  const stack = await startStack();
  const a = new AgentClient(stack.wsUrl, { ...FAST, conversation: "team" });
  const b = new AgentClient(stack.wsUrl, { ...FAST, conversation: "team" });
  try {
    const framesA = record(a), framesB = record(b);
    await a.connect();
    assertEquals(a.conversation, "team");
    assert(a.socketId, "a socket id");
    await b.connect();
    assert(b.socketId && b.socketId !== a.socketId, "each socket has its own id");
    await eventually(() => a.sockets === 2 && b.sockets === 2, "presence: 2 sockets");
    assertEquals(a.sessionId, b.sessionId, "one conversation, one session");

    stack.sim.when("[story]", {
      kind: "stream",
      tokens: Array.from({ length: 12 }, (_, i) => `t${i} `),
      gapMs: 3,
    });
    const asked = a.ask("[story] tell it");
    const final = await deadline(asked.response, 5000, "a's answer");
    // b sees the same frames of a's query, under the same numbers.
    await eventually(
      () => framesB.some((f) => f.type === "response" && f.id === asked.id && f.done),
      "b gets the end of a's answer",
    );
    const ofQuery = (frames: ServerFrame[]) =>
      frames.filter((f) => f.id === asked.id).map((f) => [f.seq, f.type]);
    assertEquals(ofQuery(framesB), ofQuery(framesA), "same frames, same seq");
    assertEquals(streamedText(framesB, asked.id), final.content);
    assertEquals([a.isOwnQuery(asked.id), b.isOwnQuery(asked.id)], [true, false]);

    // b asks now; a sees it. Pings are answered to one socket only, yet both count them.
    const pinged = await b.ping();
    assert(pinged >= 0);
    const second = b.ask("and now?");
    await deadline(second.response, 5000, "b's answer");
    await eventually(
      () => framesA.some((f) => f.type === "response" && f.id === second.id && f.done),
      "a gets b's answer",
    );
    await eventually(() => a.lastSeq === b.lastSeq, "both at the same seq");
    assertGapless(framesA.filter((f) => f.seq > framesB[0].seq), "a");
    assertGapless(framesB, "b");

    const presence: number[] = [];
    a.on("presence", (p) => presence.push(p.sockets));
    b.close();
    await eventually(() => a.sockets === 1, "presence after b left");
    assertEquals(presence, [1]);
  } finally {
    a.close();
    b.close();
    await stack.close();
  }
});

Deno.test("sdk conversation: a client drops and resumes while the other keeps asking; nothing lost or doubled", async () => {
  const stack = await startStack({ RESUME_WINDOW_SECONDS: "10" });
  const proxy = startTcpProxy(stack.server.port);
  const steady = new AgentClient(stack.wsUrl, { ...FAST, conversation: "flaky" });
  const flaky = new AgentClient(`ws://127.0.0.1:${proxy.port}`, {
    ...FAST,
    conversation: "flaky",
  });
  try {
    const framesSteady = record(steady), framesFlaky = record(flaky);
    const opens: boolean[] = [];
    flaky.on("open", (e) => opens.push(e.resumed));
    await steady.connect();
    await flaky.connect();
    const sockets = new Set([flaky.socketId]);
    flaky.on("open", () => sockets.add(flaky.socketId));

    const ids: string[] = [];
    for (let round = 0; round < 6; round++) {
      const tokens = Array.from({ length: 15 }, (_, i) => `r${round}t${i} `);
      stack.sim.when(`[r${round}]`, { kind: "stream", tokens, gapMs: 3 });
      // The steady client asks; the flaky one loses its network somewhere in the answer.
      const h = steady.ask(`[r${round}]`);
      ids.push(h.id);
      const cutAt = 1 + Math.floor(Math.random() * 14);
      let seen = 0;
      const off = flaky.on("response", (r) => {
        if (r.id === h.id && ++seen === cutAt) proxy.cutAll();
      });
      assertEquals((await deadline(h.response, 5000, `answer ${round}`)).content, tokens.join(""));
      off();
      await eventually(
        () => framesFlaky.some((f) => f.type === "response" && f.id === h.id && f.done),
        `the flaky client gets answer ${round} in full`,
        5000,
      );
      assertEquals(streamedText(framesFlaky, h.id), tokens.join(""), `round ${round}`);
    }
    assert(opens.filter((r) => r).length >= 1, `the flaky client resumed: ${opens}`);
    assertEquals(opens[0], false);
    assert(sockets.size >= 2, "a resumed socket has a new id");
    await eventually(() => flaky.lastSeq === steady.lastSeq, "caught up");
    // Every frame once, in order, on both; the flaky one saw exactly the steady one's frames
    // from its join on.
    assertGapless(framesFlaky, "flaky");
    const from = framesFlaky[0].seq;
    assertEquals(
      framesFlaky.map((f) => f.seq),
      framesSteady.filter((f) => f.seq >= from).map((f) => f.seq),
    );
    for (const id of ids) {
      const finals = framesFlaky.filter((f) => f.type === "response" && f.id === id && f.done);
      assertEquals(finals.length, 1, `one final frame for ${id}`);
    }
  } finally {
    steady.close();
    flaky.close();
    await proxy.close();
    await stack.close();
  }
});

Deno.test("sdk conversation: a client tool runs on the client whose query declared it", async () => {
  const stack = await startStack();
  const runs: string[] = [];
  const tool = (who: string) => ({
    get_location: {
      description: "Where the user is",
      execute: () => (runs.push(who), { city: "Oslo" }),
    },
  });
  const a = new AgentClient(stack.wsUrl, { ...FAST, conversation: "tools", tools: tool("a") });
  const b = new AgentClient(stack.wsUrl, { ...FAST, conversation: "tools", tools: tool("b") });
  try {
    await a.connect();
    await b.connect();
    stack.sim.when("[where]", {
      kind: "stream",
      tokens: ["You are in Oslo."],
      toolCalls: [{ id: "loc", name: "get_location", arguments: "{}" }],
      toolCallsOnce: true,
    });
    const results: string[] = [];
    b.on("tool_result", (r) => results.push(`${r.tool}:${r.ok}`));
    const h = b.ask("[where] am I?");
    const final = await deadline(h.response, 5000, "the answer");
    assert(final.content.includes('{"city":"Oslo"}'), final.content);
    assertEquals(runs, ["b"], "only the asking client ran its tool");
    assertEquals(results, ["get_location:true"]);
  } finally {
    a.close();
    b.close();
    await stack.close();
  }
});

for (const store of ["memory", "postgres"] as const) {
  Deno.test({
    name: `sdk conversation: memory commands list, search and clear conversations (${store} store)`,
    ignore: store === "postgres" && !dbAvailable,
    async fn() {
      const stack = await startStack(
        store === "postgres" ? { SESSION_STORE: "postgres", DATABASE_URL } : {},
      );
      // Names of their own: a shared database may hold other tests' conversations.
      const tag = crypto.randomUUID().slice(0, 8);
      const [tripName, workName] = [`trip-${tag}`, `work-${tag}`];
      const trip = new AgentClient(stack.wsUrl, { ...FAST, conversation: tripName });
      const work = new AgentClient(stack.wsUrl, { ...FAST, conversation: workName });
      try {
        await trip.connect();
        await work.connect();
        stack.sim.when(`Lisbon${tag}`, { kind: "stream", tokens: ["Start ", "in ", "Alfama."] });
        await deadline(trip.ask(`Plan a day in Lisbon${tag}`).response, 5000, "trip answer");
        await deadline(work.ask("Summarize the standup").response, 5000, "work answer");

        const { conversations } = await deadline(trip.conversations(), 3000, "conversations");
        const mine = conversations.filter((c) => c.name.endsWith(tag));
        assertEquals(mine.map((c) => [c.name, c.messages]), [[workName, 2], [tripName, 2]]);
        assert(!Number.isNaN(Date.parse(mine[0].updated_at)), "updated_at is a date");

        const found = await deadline(
          work.searchMemory(`Lisbon${tag}`, { limit: 5 }),
          3000,
          "search",
        );
        assertEquals(found.query, `Lisbon${tag}`);
        assert(found.results.length >= 1 && found.results.length <= 5, "hits within the limit");
        assertEquals(found.results[0].conversation, tripName, "found from another conversation");
        assertEquals(found.results[0].role, "user");
        assert(found.results.every((r) => typeof r.score === "number"), "scored");

        const cleared = await deadline(work.clearMemory(tripName), 3000, "clear");
        assertEquals([cleared.conversation, cleared.cleared], [tripName, 1]);
        const after = await deadline(work.searchMemory(`Lisbon${tag}`), 3000, "search after clear");
        assertEquals(after.results, []);
        const err = await work.clearMemory("bad name").then(() => null, (e) => e);
        assertEquals(err?.code, "invalid_conversation", "a bad name never reaches the server");
      } finally {
        trip.close();
        work.close();
        await stack.close();
      }
    },
  });
}

Deno.test({
  name:
    "sdk conversation on two processes (postgres): clients on either process share the answers; " +
    "one that drops comes back through the other process with nothing lost or doubled",
  ignore: !dbAvailable,
  async fn() {
    const sim = startSimulator({ tokenDelayMs: 2 });
    const env = durableEnv(sim.url);
    const a = await startServerProcess(env);
    const b = await startServerProcess(env);
    // The wandering client's URL leads to whichever process the "load balancer" picks now.
    const ports = [a, b].map((p) => Number(new URL(p.url).port));
    let target = 1;
    const balancer = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const conns = new Set<Deno.Conn>();
    (async () => {
      for await (const conn of balancer) {
        conns.add(conn);
        const upstream = await Deno.connect({ hostname: "127.0.0.1", port: ports[target] });
        conns.add(upstream);
        const pipe = (from: Deno.Conn, to: Deno.Conn) =>
          from.readable.pipeTo(to.writable).catch(() => {}).finally(() => {
            for (const c of [from, to]) {
              conns.delete(c);
              try {
                c.close();
              } catch { /* already closed */ }
            }
          });
        pipe(conn, upstream);
        pipe(upstream, conn);
      }
    })().catch(() => {});
    const cutAll = () => {
      for (const c of conns) {
        try {
          c.close();
        } catch { /* already closed */ }
      }
      conns.clear();
    };
    const name = `sdk-two-${crypto.randomUUID().slice(0, 8)}`;
    const home = new AgentClient(a.wsUrl, { ...FAST, conversation: name });
    const rover = new AgentClient(`ws://127.0.0.1:${balancer.addr.port}`, {
      ...FAST,
      conversation: name,
    });
    try {
      const framesHome = record(home), framesRover = record(rover);
      await home.connect();
      await rover.connect(); // through the balancer, to process b
      await eventually(() => home.sockets === 2 && rover.sockets === 2, "presence 2", 5000);
      const resumes: boolean[] = [];
      rover.on("open", (e) => resumes.push(e.resumed));
      const ids: string[] = [];
      for (let round = 0; round < 4; round++) {
        const tokens = Array.from({ length: 20 }, (_, i) => `p${round}t${i} `);
        sim.when(`[p${round}]`, { kind: "stream", tokens, gapMs: 4 });
        // Rounds alternate who asks; the rover loses its connection mid-answer and comes back
        // through the other process.
        const asker = round % 2 ? rover : home;
        const h = asker.ask(`[p${round}]`);
        ids.push(h.id);
        let seen = 0;
        const off = rover.on("response", (r) => {
          if (r.id === h.id && ++seen === 5) {
            target = 1 - target;
            cutAll();
          }
        });
        assertEquals(
          (await deadline(h.response, 15_000, `answer ${round}`)).content,
          tokens.join(""),
        );
        off();
        for (const frames of [framesHome, framesRover]) {
          await eventually(
            () => frames.some((f) => f.type === "response" && f.id === h.id && f.done),
            `answer ${round} on both clients`,
            15_000,
          );
          assertEquals(streamedText(frames, h.id), tokens.join(""), `round ${round}`);
        }
      }
      assert(resumes.filter((r) => r).length >= 2, `the rover resumed: ${resumes}`);
      await eventually(() => rover.lastSeq === home.lastSeq, "caught up", 5000);
      assertGapless(framesRover, "rover");
      assertGapless(framesHome, "home");
      for (const frames of [framesHome, framesRover]) {
        for (const id of ids) {
          const ends = frames.filter((f) => f.id === id && f.type === "response" && f.done);
          assertEquals(ends.length, 1, `one end of ${id}`);
        }
      }
      assertEquals(sim.requests.length, ids.length, "each query went upstream once");
    } finally {
      home.close();
      rover.close();
      balancer.close();
      cutAll();
      await a.kill("SIGTERM");
      await b.kill("SIGTERM");
      await sim.close();
    }
  },
});
