/**
 * Supabase edge runtime hooks, behind feature checks so that the same code
 * runs under plain `deno run` (locally, in tests) where they do not exist.
 *
 * @module
 */

interface EdgeRuntimeGlobal {
  waitUntil(promise: Promise<unknown>): void;
}

function edgeRuntime(): EdgeRuntimeGlobal | undefined {
  const rt = (globalThis as { EdgeRuntime?: EdgeRuntimeGlobal }).EdgeRuntime;
  return rt && typeof rt.waitUntil === "function" ? rt : undefined;
}

/**
 * Whether this code runs inside Supabase's edge runtime.
 *
 * @example
 * ```ts
 * if (isEdgeRuntime()) console.log("hosted");
 * ```
 */
export function isEdgeRuntime(): boolean {
  return edgeRuntime() !== undefined;
}

/**
 * Keeps the isolate alive until `promise` settles (a socket closes). Without
 * it the edge runtime may retire an isolate whose request "finished" at the
 * 101 upgrade while its socket is still streaming. A no-op elsewhere.
 *
 * @example
 * ```ts
 * import { keepAliveUntil } from "./edge_runtime.ts";
 * export const keep = (socket: WebSocket) =>
 *   keepAliveUntil(new Promise((resolve) => socket.addEventListener("close", resolve)));
 * ```
 */
export function keepAliveUntil(promise: Promise<unknown>): void {
  edgeRuntime()?.waitUntil(promise);
}

/**
 * Runs `fn` when the edge runtime is about to retire the isolate
 * (`beforeunload`: wall clock or CPU budget reached). Returns whether a hook
 * was installed; under plain Deno it is not (signals do that job).
 *
 * @example
 * ```ts
 * import { onBeforeUnload } from "./edge_runtime.ts";
 * onBeforeUnload(() => console.log("isolate_retiring")); // false under plain Deno
 * ```
 */
export function onBeforeUnload(fn: () => void): boolean {
  if (!isEdgeRuntime()) return false;
  globalThis.addEventListener("beforeunload", () => fn());
  return true;
}
