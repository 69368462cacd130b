/**
 * The few assertions the tests use. `@std/assert` lives on JSR, which these
 * machines cannot reach, so the suite carries its own small set.
 *
 * @module
 */

/** Throws unless `cond` holds. */
export function assert(cond: unknown, msg = "assertion failed"): asserts cond {
  if (!cond) throw new Error(msg);
}

/** Deep equality via a canonical JSON form (key order ignored). */
export function assertEquals(actual: unknown, expected: unknown, msg?: string): void {
  const a = canonical(actual);
  const e = canonical(expected);
  if (a !== e) throw new Error(`${msg ? msg + ": " : ""}expected ${e}\n      got ${a}`);
}

/** Throws if the value is null or undefined. */
export function assertExists<T>(
  value: T,
  msg = "value is missing",
): asserts value is NonNullable<T> {
  if (value === null || value === undefined) throw new Error(msg);
}

/** Throws unless `text` contains `part`. */
export function assertStringIncludes(text: string, part: string): void {
  if (!text.includes(part)) {
    throw new Error(`expected ${JSON.stringify(text)} to include ${JSON.stringify(part)}`);
  }
}

function canonical(v: unknown): string {
  return JSON.stringify(
    v,
    (_k, val) =>
      val && typeof val === "object" && !Array.isArray(val)
        ? Object.fromEntries(Object.entries(val).sort(([a], [b]) => a.localeCompare(b)))
        : val === undefined
        ? "__undefined__"
        : val,
  ) ?? "undefined";
}
