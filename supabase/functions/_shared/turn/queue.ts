/**
 * A bounded FIFO of queries waiting for their session's generation slot.
 * Queries of one session are answered one at a time, in the order received.
 * Only {@linkcode Turns} (turns.ts) touches it.
 *
 * @module
 */

import type { ClientToolDeclaration } from "../protocol/frames.ts";

/** A query accepted and waiting to run. */
export interface PendingQuery {
  id: string;
  content: string;
  /** The model the client asked for (checked against the allowed list); default otherwise. */
  model?: string;
  stream: boolean;
  metadata: Record<string, unknown>;
  /** Tools the client declared with this query; it runs them. */
  clientTools: ClientToolDeclaration[];
  receivedAt: number;
  /** In a conversation: the socket that asked (the others see the question with its answer). */
  askedBy?: string;
}

/**
 * The waiting line of one session.
 *
 * @example
 * ```ts
 * import { QueryQueue } from "./queue.ts";
 * const q = new QueryQueue(10);
 * q.push({
 *   id: "a", content: "hi", stream: true, metadata: {}, clientTools: [], receivedAt: 0,
 * });
 * q.shift()?.id; // "a"
 * ```
 */
export class QueryQueue {
  #items: PendingQuery[] = [];

  constructor(readonly capacity: number) {}

  /** Number of waiting queries. */
  get size(): number {
    return this.#items.length;
  }

  /** Adds a query; returns its 1-based position, or 0 when the queue is full. */
  push(query: PendingQuery): number {
    if (this.#items.length >= this.capacity) return 0;
    return this.#items.push(query);
  }

  /** Takes the oldest query. */
  shift(): PendingQuery | undefined {
    return this.#items.shift();
  }

  /** Removes a waiting query by id; returns it, or undefined if it is not waiting. */
  remove(id: string): PendingQuery | undefined {
    const i = this.#items.findIndex((q) => q.id === id);
    return i < 0 ? undefined : this.#items.splice(i, 1)[0];
  }

  /** Whether a query with this id is waiting. */
  has(id: string): boolean {
    return this.#items.some((q) => q.id === id);
  }

  /** The ids of the waiting queries, oldest first. */
  ids(): string[] {
    return this.#items.map((q) => q.id);
  }

  /** Removes and returns every waiting query. */
  drain(): PendingQuery[] {
    return this.#items.splice(0);
  }
}
