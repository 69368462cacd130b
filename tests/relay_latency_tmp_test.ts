import { TestClient } from "./helpers.ts";
import { withTwoProcesses } from "./process.ts";
Deno.test("relay latency", () =>
  withTwoProcesses(async (sim, a, b) => {
    const name = `lat-${crypto.randomUUID().slice(0, 6)}`;
    const onA = await TestClient.connect(`${a.wsUrl}?conversation=${name}`);
    await onA.waitFor((f) => f.event === "connected", "c", 8000);
    const onB = await TestClient.connect(`${b.wsUrl}?conversation=${name}`);
    await onB.waitFor((f) => f.event === "connected", "c", 8000);
    const times = new Map<number, number[]>();
    for (const [i, c] of [[0, onA], [1, onB]] as const) {
      c.ws.addEventListener("message", (e) => {
        const f = JSON.parse(e.data);
        if (f.seq > 0) {
          const t = times.get(f.seq) ?? [0, 0];
          t[i] = performance.now();
          times.set(f.seq, t);
        }
      });
    }
    sim.when("[lat]", {
      kind: "stream",
      tokens: Array.from({ length: 200 }, (_, i) => `t${i} `),
      gapMs: 10,
    });
    for (let k = 0; k < 3; k++) {
      const id = onA.query("[lat]");
      await onB.terminal(id, 20000);
    }
    const lags = [...times.values()].filter(([x, y]) => x && y).map(([x, y]) => y - x).sort((
      p,
      q,
    ) => p - q);
    const pct = (p: number) => lags[Math.floor(p * (lags.length - 1))].toFixed(1);
    console.log(
      `frames ${lags.length} lag p50 ${pct(0.5)} ms p95 ${pct(0.95)} ms p99 ${pct(0.99)} ms max ${
        pct(1)
      } ms`,
    );
    await onA.close();
    await onB.close();
  }));
