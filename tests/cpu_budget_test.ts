import { assert, assertEquals } from "./assert.ts";
import { deadline } from "./helpers.ts";
import {
  createCpuBudget,
  detectCpuClock,
} from "../supabase/functions/_shared/platform/cpu_budget.ts";

/** Keeps the CPU busy in slices, yielding so that timers run, until `until()` holds. */
async function burnUntil(until: () => boolean): Promise<void> {
  while (!until()) {
    const sliceEnd = performance.now() + 5;
    let x = 0;
    while (performance.now() < sliceEnd) x += Math.sqrt(x + 1);
    await new Promise((r) => setTimeout(r, 0));
  }
}

Deno.test("cpu budget: plain Deno has a CPU clock, and it moves with work", async () => {
  const clock = detectCpuClock();
  assert(clock, "no CPU clock under Deno");
  const before = clock.read();
  // A clock that does not move with work never gets there.
  await deadline(burnUntil(() => clock.read() - before >= 30), 5000, "30 ms of CPU on the clock");
});

Deno.test("cpu budget: a small budget fires once, after the CPU was really spent", async () => {
  const fired: number[] = [];
  const { promise, resolve } = Promise.withResolvers<void>();
  const budget = createCpuBudget({
    softMs: 50,
    sampleMs: 10,
    fromNow: true,
    onExceeded: (used) => {
      fired.push(used);
      resolve();
    },
  });
  try {
    assert(budget.source === "thread" || budget.source === "process", budget.source);
    assertEquals([budget.exceeded, budget.check()], [false, false]);
    const clock = detectCpuClock()!;
    const start = clock.read();
    await deadline(
      Promise.race([promise, burnUntil(() => fired.length > 0)]),
      10_000,
      "the budget to fire",
    );
    const spent = clock.read() - start;
    assertEquals(fired.length, 1);
    assert(fired[0] >= 50, `fired at ${fired[0]} ms`);
    assert(spent >= 40, `fired after only ${spent} ms of CPU`);
    assert(budget.exceeded && budget.check());
    await burnUntil(() => clock.read() - start > spent + 20);
    assertEquals(fired.length, 1, "fires only once");
  } finally {
    budget.stop();
  }
});

Deno.test("cpu budget: check() reads the clock at once; off when 0 or without a clock", () => {
  let now = 10;
  const fired: number[] = [];
  const budget = createCpuBudget({
    softMs: 100,
    clock: () => now,
    onExceeded: (used) => fired.push(used),
  });
  try {
    assertEquals([budget.source, budget.usedMs(), budget.check()], ["custom", 10, false]);
    now = 100;
    assertEquals([budget.check(), fired], [true, [100]]);
    now = 500;
    assertEquals([budget.check(), fired], [true, [100]]);
  } finally {
    budget.stop();
  }
  const off = createCpuBudget({ softMs: 0, clock: () => 1e9, onExceeded: () => fired.push(-1) });
  const none = createCpuBudget({ softMs: 1, clock: null, onExceeded: () => fired.push(-2) });
  assertEquals([off.check(), none.check(), none.source, fired], [false, false, "none", [100]]);
  assert(Number.isNaN(none.usedMs()));
});
