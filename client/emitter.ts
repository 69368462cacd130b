/**
 * A small typed event emitter shared by the transport and the protocol client. A throwing
 * listener never breaks the emitter's owner: its error is rethrown asynchronously.
 *
 * @example
 * ```ts
 * import { Emitter } from "./emitter.ts";
 * const events = new Emitter<{ tick: number }>();
 * const off = events.on("tick", (n) => console.log(n));
 * events.emit("tick", 1);
 * off();
 * ```
 * @module
 */

/**
 * A listener of one event type.
 *
 * @example
 * ```ts
 * import type { Listener } from "./emitter.ts";
 * const log: Listener<number> = (n) => console.log(n);
 * ```
 */
export type Listener<T> = (event: T) => void;

/**
 * Listeners by event name; `Events` maps each name to its payload type.
 *
 * @example
 * ```ts
 * import { Emitter } from "./emitter.ts";
 * const e = new Emitter<{ open: { id: string } }>();
 * e.on("open", ({ id }) => console.log(id));
 * e.emit("open", { id: "s1" });
 * ```
 */
export class Emitter<Events> {
  // Listener<never> is the common supertype of every listener type.
  #listeners = new Map<keyof Events, Set<Listener<never>>>();

  /**
   * Subscribes; returns the unsubscribe function.
   *
   * @example
   * ```ts
   * import { Emitter } from "./emitter.ts";
   * const off = new Emitter<{ x: number }>().on("x", console.log);
   * off();
   * ```
   */
  on<K extends keyof Events>(type: K, listener: Listener<Events[K]>): () => void {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, set = new Set());
    set.add(listener);
    return () => this.off(type, listener);
  }

  /**
   * Unsubscribes a listener added with {@linkcode Emitter.on}.
   *
   * @example
   * ```ts
   * import { Emitter } from "./emitter.ts";
   * const e = new Emitter<{ x: number }>();
   * e.on("x", console.log);
   * e.off("x", console.log);
   * ```
   */
  off<K extends keyof Events>(type: K, listener: Listener<Events[K]>): void {
    this.#listeners.get(type)?.delete(listener);
  }

  /**
   * Calls every listener of `type` with `event`, in subscription order.
   *
   * @example
   * ```ts
   * import { Emitter } from "./emitter.ts";
   * new Emitter<{ x: number }>().emit("x", 42);
   * ```
   */
  emit<K extends keyof Events>(type: K, event: Events[K]): void {
    const set = this.#listeners.get(type);
    if (!set) return;
    for (const listener of [...set] as Listener<Events[K]>[]) {
      try {
        listener(event);
      } catch (e) {
        // A throwing listener must not corrupt its owner's state; surface it asynchronously.
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }
}
