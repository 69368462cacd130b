/**
 * Combining abort signals. `AbortSignal.any()` would do, but the signal it
 * returns is held only weakly by its sources: under memory pressure V8 may
 * collect it while a fetch still waits on it, and then an abort (a user's
 * cancel) never arrives — seen here under the soak test with forced GC. These
 * links are strong, and are undone explicitly.
 *
 * @module
 */

/** A signal that aborts when any of its sources does, until disposed. */
export interface LinkedSignal {
  signal: AbortSignal;
  /** Detaches from the sources; call it when the work is done. */
  dispose(): void;
}

/**
 * Links `sources` into one signal, with the first source's reason.
 *
 * @example
 * ```ts
 * import { linkSignals } from "./signals.ts";
 * const userCancel = new AbortController();
 * const linked = linkSignals(userCancel.signal, AbortSignal.timeout(5000));
 * try {
 *   userCancel.abort("cancel");
 *   console.log(linked.signal.reason); // "cancel"
 * } finally {
 *   linked.dispose();
 * }
 * ```
 */
export function linkSignals(...sources: AbortSignal[]): LinkedSignal {
  const controller = new AbortController();
  const links: [AbortSignal, () => void][] = [];
  const dispose = () => {
    for (const [source, onAbort] of links) source.removeEventListener("abort", onAbort);
    links.length = 0;
  };
  for (const source of sources) {
    if (source.aborted) {
      controller.abort(source.reason);
      break;
    }
    const onAbort = () => {
      controller.abort(source.reason);
      dispose();
    };
    source.addEventListener("abort", onAbort, { once: true });
    links.push([source, onAbort]);
  }
  if (controller.signal.aborted) dispose();
  return { signal: controller.signal, dispose };
}
