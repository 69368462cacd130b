import {
  backoffDelay,
  closeDisposition,
  DEFAULT_RECONNECT,
  isDuplicate,
  resolveReconnect,
  resumeUrl,
} from "./backoff.ts";
import { CLOSE } from "./protocol.ts";

function assertEquals<T>(actual: T, expected: T) {
  const [a, e] = [JSON.stringify(actual), JSON.stringify(expected)];
  if (a !== e) throw new Error(`expected ${e}, got ${a}`);
}

Deno.test("defaults match the documented policy", () => {
  assertEquals(resolveReconnect(), {
    initialDelayMs: 250,
    maxDelayMs: 10_000,
    factor: 2,
    maxAttempts: Infinity,
  });
  assertEquals(resolveReconnect(false).maxAttempts, 0);
  // Nonsense values fall back to defaults rather than producing NaN delays.
  assertEquals(resolveReconnect({ factor: -1, initialDelayMs: NaN }), { ...DEFAULT_RECONNECT });
});

Deno.test("upper bound grows by factor and is capped", () => {
  const policy = resolveReconnect();
  const top = (attempt: number) => backoffDelay(attempt, policy, () => 0.999999);
  assertEquals([0, 1, 2, 3, 4, 5, 6, 10].map(top), [
    249,
    499,
    999,
    1999,
    3999,
    7999,
    9999,
    9999,
  ]);
});

Deno.test("full jitter spans [0, ceiling)", () => {
  const policy = resolveReconnect({ initialDelayMs: 1000, factor: 3 });
  assertEquals(backoffDelay(1, policy, () => 0), 0);
  assertEquals(backoffDelay(1, policy, () => 0.5), 1500);
  let lo = Infinity, hi = 0;
  for (let i = 0; i < 2000; i++) {
    const d = backoffDelay(2, policy);
    lo = Math.min(lo, d);
    hi = Math.max(hi, d);
  }
  // 2000 uniform draws over [0, 9000): both ends are reached within 5% with near certainty.
  if (lo > 450 || hi < 8550 || hi >= 9000) throw new Error(`poor spread: ${lo}..${hi}`);
});

Deno.test("huge attempt counts stay finite", () => {
  const d = backoffDelay(10_000, resolveReconnect({ maxDelayMs: Infinity }), () => 0.5);
  if (!Number.isFinite(d) || d > 2 ** 31) throw new Error(`bad delay ${d}`);
  assertEquals(backoffDelay(10_000, resolveReconnect({ initialDelayMs: 0 }), () => 0.5), 0);
});

Deno.test("terminal close codes stop, others reconnect", () => {
  assertEquals(closeDisposition(4001, ""), { reconnect: false, error: "unauthorized" });
  assertEquals(closeDisposition(1008, "Origin"), { reconnect: false, error: "policy_violation" });
  assertEquals(closeDisposition(4029, ""), { reconnect: false, error: "too_many_connections" });
  assertEquals(closeDisposition(4002, "Session taken over").error, "session_taken_over");
  assertEquals(closeDisposition(1000, "Session timeout"), {
    reconnect: false,
    error: "session_timeout",
  });
  // An expired token is renewed by reconnecting, never a reason to give up.
  assertEquals(closeDisposition(CLOSE.tokenExpired, "Token expired"), {
    reconnect: true,
    refreshToken: true,
  });
  for (const code of [1000, 1001, 1006, 1011, 1012, 4000]) {
    assertEquals(closeDisposition(code, "").reconnect, true);
  }
});

Deno.test("duplicates are frames at or below the last seq", () => {
  assertEquals([5, 6, 7, 8].map((s) => isDuplicate(s, 6)), [true, true, false, false]);
  assertEquals(isDuplicate(undefined, 6), false);
  assertEquals(isDuplicate(0, 6), false); // unsequenced socket-level frame
  assertEquals(isDuplicate(1, 0), false);
});

Deno.test("resume URL keeps other query parameters", () => {
  assertEquals(
    resumeUrl("ws://127.0.0.1:8000/functions/v1/agent_websocket?jwt=x&conversation=a", "s1", 42),
    "ws://127.0.0.1:8000/functions/v1/agent_websocket?jwt=x&conversation=a&session_id=s1&last_seq=42",
  );
  // A resume replaces stale values instead of appending a second copy.
  assertEquals(
    resumeUrl("wss://h/?session_id=old&last_seq=1", "new", 9),
    "wss://h/?session_id=new&last_seq=9",
  );
  assertEquals(resumeUrl("https://h/f", "s", 0), "wss://h/f?session_id=s&last_seq=0");
});
