/**
 * The chaos run: two server processes on one database, clients that ask and
 * reconnect to either at random points, and forced events among them —
 * crashes, planned stops, database cuts and partitions, reconnects. CI runs
 * about 200 events (≈ 60–90 s); `CHAOS_EVENTS=1000` makes the full run. The
 * counts table is printed either way; the test fails naming each broken
 * invariant with the frames that show it. `CHAOS_LOGS=path` writes every
 * server's log lines, in time order. `CHAOS_REPORT=path` writes the
 * whole report (every violation, with frames and server log lines) as JSON;
 * `CHAOS_SEED` replays a run's choices.
 */
import { dbAvailable } from "./db.ts";
import { assertInvariants, formatReport, runChaos } from "./chaos.ts";

const events = Number(Deno.env.get("CHAOS_EVENTS") ?? 200);
const seed = Deno.env.get("CHAOS_SEED");

Deno.test({
  name: `chaos: ${events} forced events over two processes; every query ends exactly once`,
  ignore: !dbAvailable,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const report = await runChaos({
      events,
      clients: 8,
      processes: 2,
      seed: seed ? Number(seed) : undefined,
      log: (line) => console.log(line),
      annotateAll: !!Deno.env.get("CHAOS_REPORT"),
      logsTo: Deno.env.get("CHAOS_LOGS"),
    });
    console.log(formatReport(report));
    // The whole report (every violation with its frames) for reading at leisure.
    const dump = Deno.env.get("CHAOS_REPORT");
    if (dump) await Deno.writeTextFile(dump, JSON.stringify(report, null, 1));
    assertInvariants(report, { title: "chaos run" });
  },
});
