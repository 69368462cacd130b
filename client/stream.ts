/**
 * A buffered async iterable: every iterator sees every item, whenever it starts reading. The SDK
 * uses it for a query's text deltas, reasoning deltas and events.
 *
 * @example
 * ```ts
 * import { BufferedStream } from "./stream.ts";
 * const s = new BufferedStream<string>();
 * s.push("a");
 * s.end();
 * for await (const x of s) console.log(x); // "a"
 * ```
 * @module
 */

/**
 * Items pushed by a producer, read by any number of `for await` loops; ends normally or with
 * an error that every loop rethrows.
 *
 * @example
 * ```ts
 * import { BufferedStream } from "./stream.ts";
 * const s = new BufferedStream<number>();
 * s.end(new Error("failed"));
 * try { for await (const _ of s); } catch (e) { console.log((e as Error).message); }
 * ```
 */
export class BufferedStream<T> implements AsyncIterable<T> {
  #items: T[] = [];
  #ended = false;
  #error: unknown;
  #wakers: (() => void)[] = [];

  /**
   * Adds an item (ignored after {@linkcode BufferedStream.end}).
   *
   * @example
   * ```ts
   * import { BufferedStream } from "./stream.ts";
   * new BufferedStream<string>().push("delta");
   * ```
   */
  push(item: T): void {
    if (this.#ended) return;
    this.#items.push(item);
    this.#wake();
  }

  /**
   * Ends the stream, with `error` thrown to readers when given. Only the first call counts.
   *
   * @example
   * ```ts
   * import { BufferedStream } from "./stream.ts";
   * new BufferedStream<string>().end();
   * ```
   */
  end(error?: unknown): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = error;
    this.#wake();
  }

  #wake() {
    for (const w of this.#wakers.splice(0)) w();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (let i = 0;;) {
      if (i < this.#items.length) yield this.#items[i++];
      else if (this.#ended) {
        if (this.#error !== undefined) throw this.#error;
        return;
      } else await new Promise<void>((r) => this.#wakers.push(r));
    }
  }
}
