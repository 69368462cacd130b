/**
 * The feedback a session received, bounded: one entry per response (a later
 * rating of the same response replaces the earlier one), at most `maxEntries`
 * responses and `maxChars` characters of comments per session. Without a
 * bound, 25,000 feedback frames with 4000-character comments on one id held
 * 150 MB.
 *
 * @module
 */

/** Feedback a client gave on a response. */
export interface FeedbackEntry {
  /** The id of the response. */
  id: string;
  rating: "up" | "down";
  comment?: string;
  /** ISO time it was given. */
  at: string;
}

/**
 * What {@linkcode FeedbackLog.add} did: kept a new entry, replaced the
 * entry of the same response, or refused it because the log is full.
 */
export type FeedbackOutcome = "added" | "replaced" | "full";

/** Bounds of a {@linkcode FeedbackLog}. */
export interface FeedbackLimits {
  /** Responses with feedback per session. Default 100. */
  maxEntries?: number;
  /** Characters of comments per session, all entries together. Default 100 000. */
  maxChars?: number;
}

/**
 * @example
 * ```ts
 * const log = new FeedbackLog({ maxEntries: 100 });
 * log.add({ id: "q1", rating: "up", at: new Date().toISOString() }); // "added"
 * log.add({ id: "q1", rating: "down", at: new Date().toISOString() }); // "replaced"
 * log.size; // 1
 * ```
 */
export class FeedbackLog {
  readonly #entries = new Map<string, FeedbackEntry>();
  readonly #maxEntries: number;
  readonly #maxChars: number;
  #chars = 0;

  constructor(limits: FeedbackLimits = {}) {
    this.#maxEntries = limits.maxEntries ?? 100;
    this.#maxChars = limits.maxChars ?? 100_000;
  }

  /**
   * Keeps `entry`, unless that would pass a bound: then nothing changes and
   * the caller should tell the client (and need not log it).
   */
  add(entry: FeedbackEntry): FeedbackOutcome {
    const previous = this.#entries.get(entry.id);
    const chars = this.#chars - (previous?.comment?.length ?? 0) + (entry.comment?.length ?? 0);
    if (chars > this.#maxChars || (!previous && this.#entries.size >= this.#maxEntries)) {
      return "full";
    }
    // Deleting first moves a replaced entry to the end: entries() stays in order of last change.
    this.#entries.delete(entry.id);
    this.#entries.set(entry.id, entry);
    this.#chars = chars;
    return previous ? "replaced" : "added";
  }

  /** The feedback on one response, if any. */
  get(id: string): FeedbackEntry | undefined {
    return this.#entries.get(id);
  }

  /** Responses with feedback. */
  get size(): number {
    return this.#entries.size;
  }

  /** Characters of comments held. */
  get chars(): number {
    return this.#chars;
  }

  /** Every entry, oldest change first. */
  entries(): FeedbackEntry[] {
    return [...this.#entries.values()];
  }
}
