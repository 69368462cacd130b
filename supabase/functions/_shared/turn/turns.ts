/**
 * The one owner of a session's queries: the waiting line, the query in
 * flight and its abort, cancel, the answers client tools and approvals wait
 * for, the ids already answered (for feedback), and the list of open queries
 * the store keeps so another process can end them after a crash.
 *
 * @module
 */
import { AgentError } from "../protocol/errors.ts";
import type { OutgoingFrame } from "../protocol/wire.ts";
import type { SessionStore } from "../store/store.ts";
import { type PendingQuery, QueryQueue } from "./queue.ts";
import type { TurnCheckpoint } from "./checkpoint.ts";

/** Why a query's work was aborted by us (the abort reason). */
export type AbortWhy = "cancel" | "closed" | "released" | "slow_consumer";

/** What {@linkcode Turns} needs of its session. */
export interface TurnHost {
  readonly id: string;
  readonly store: SessionStore;
  readonly closed: boolean;
  readonly counters: { queries: number; cancelled: number };
  emit(frame: OutgoingFrame): number;
}

/** Runs one query to its one terminal frame; `turn.signal` aborts it. */
export type TurnRunner = (turn: InFlight) => Promise<void>;

/** The answer a client tool call or an approval waits for. */
export type ToolAnswer =
  | { kind: "tool_result"; result?: unknown; error?: string }
  | { kind: "approval"; approved: boolean; reason?: string };

/** The query running now, and what it waits for. */
export class InFlight {
  readonly controller = new AbortController();
  /** Text streamed so far; a cancel ends the query with it. */
  content = "";
  firstTokenMs: number | null = null;
  readonly #waits = new Map<string, { kind: ToolAnswer["kind"]; resolve(a: ToolAnswer): void }>();

  /**
   * @param checkpoint set when this turn carries on one that waited in a
   * process that stopped
   */
  constructor(readonly query: PendingQuery, readonly checkpoint?: TurnCheckpoint) {}

  get id(): string {
    return this.query.id;
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /**
   * Waits for the client's answer to a tool call (`tool_result`) or a human's
   * decision (`approval`). Rejects with the abort reason when the turn stops.
   */
  waitFor(toolCallId: string, kind: ToolAnswer["kind"]): Promise<ToolAnswer> {
    return new Promise((resolve, reject) => {
      const signal = this.signal;
      if (signal.aborted) return reject(signal.reason);
      const onAbort = () => {
        this.#waits.delete(toolCallId);
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.#waits.set(toolCallId, {
        kind,
        resolve: (a) => {
          signal.removeEventListener("abort", onAbort);
          this.#waits.delete(toolCallId);
          resolve(a);
        },
      });
    });
  }

  /** Whether the turn now waits only for people (an approval, a client's tool result). */
  get waitingForPeople(): boolean {
    return this.#waits.size > 0;
  }

  /** Stops waiting for a call (its timeout passed); a late answer is then `not_found`. */
  forget(toolCallId: string): void {
    this.#waits.delete(toolCallId);
  }

  /** Whether a call waits for an answer of this kind. */
  waits(toolCallId: string, kind: ToolAnswer["kind"]): boolean {
    return this.#waits.get(toolCallId)?.kind === kind;
  }

  /** Delivers an answer; false when nothing waits for it. */
  answer(toolCallId: string, answer: ToolAnswer): boolean {
    const w = this.#waits.get(toolCallId);
    if (!w || w.kind !== answer.kind) return false;
    w.resolve(answer);
    return true;
  }
}

/** Keeps feedback answerable for recent responses without growing forever. */
const ANSWERED_IDS_KEPT = 1000;

/**
 * The queries of one session, answered one at a time in the order received.
 *
 * @example
 * ```ts
 * import { Turns } from "./turns.ts";
 * import { MemoryStore } from "../store/store.ts";
 * const host = {
 *   id: "s1", closed: false, counters: { queries: 0, cancelled: 0 },
 *   store: new MemoryStore({
 *     maxHistory: 50, maxHistoryChars: 200_000, replayMaxFrames: 100, replayMaxBytes: 1 << 20,
 *   }),
 *   emit: () => 1,
 * };
 * const turns = new Turns(host, async (turn) => console.log(turn.query.content), 10);
 * turns.submit({
 *   id: "q1", content: "hi", stream: true, metadata: {}, clientTools: [], receivedAt: 0,
 * });
 * ```
 */
export class Turns {
  readonly #queue: QueryQueue;
  #inFlight: InFlight | null = null;
  /** Whether the query in flight has emitted its terminal frame (it may still be finishing). */
  #inFlightEnded = false;
  readonly #answered = new Set<string>();

  constructor(readonly host: TurnHost, readonly run: TurnRunner, maxQueue: number) {
    this.#queue = new QueryQueue(maxQueue);
  }

  /** The query running now. */
  get inFlight(): InFlight | null {
    return this.#inFlight;
  }

  /** How many queries wait. */
  get waiting(): number {
    return this.#queue.size;
  }

  /** Whether a query id is in flight or waiting. */
  knows(id: string): boolean {
    return this.#inFlight?.id === id || this.#queue.has(id);
  }

  /** Whether a query of this session was answered (recently). */
  answered(id: string): boolean {
    return this.#answered.has(id);
  }

  /** Records that a query got its terminal frame. */
  markAnswered(id: string): void {
    this.#answered.add(id);
    if (this.#answered.size > ANSWERED_IDS_KEPT) {
      this.#answered.delete(this.#answered.values().next().value!);
    }
  }

  /**
   * Accepts a query: runs it now, or queues it with a `queued` status.
   * Throws `queue_full` or `invalid_message` (a duplicate id).
   */
  submit(query: PendingQuery): void {
    if (this.knows(query.id)) {
      throw new AgentError("invalid_message", "A query with this id is already in progress");
    }
    if (this.#inFlight || this.#queue.size > 0) {
      const position = this.#queue.push(query);
      if (position === 0) {
        throw new AgentError("queue_full", `At most ${this.#queue.capacity} queries may wait`, {
          retryable: true,
        });
      }
      this.host.counters.queries++;
      this.#syncOpen();
      this.host.emit({
        type: "status",
        id: query.id,
        state: "queued",
        content: `Queued at position ${position}`,
        position,
      });
    } else {
      this.host.counters.queries++;
      this.#start(query);
    }
  }

  /**
   * Cancels a query (default: the one in flight); returns its id. A waiting
   * one ends at once; the running one ends itself once its abort lands.
   * Throws `not_found` when no such query runs or waits.
   */
  cancel(id: string | undefined, announce: (target: string) => void): string {
    const target = id ?? this.#inFlight?.id;
    if (!target || !this.knows(target)) {
      throw new AgentError("not_found", "No query with that id is running or waiting");
    }
    announce(target);
    const waiting = this.#queue.remove(target);
    if (waiting) {
      this.endCancelled(waiting, "", null);
    } else {
      this.#inFlight?.controller.abort("cancel" satisfies AbortWhy);
    }
    return target;
  }

  /**
   * Carries on a turn that was waiting (for an approval or a client's tool
   * result) in a process that stopped; it runs before anything queued.
   */
  resume(checkpoint: TurnCheckpoint): void {
    this.host.counters.queries++;
    this.#start({ ...checkpoint.query, receivedAt: performance.now() }, checkpoint);
  }

  /** Ends a query as cancelled, with the text streamed so far. */
  endCancelled(query: PendingQuery, partial: string, firstTokenMs: number | null): void {
    this.host.counters.cancelled++;
    this.markAnswered(query.id);
    this.host.emit({ type: "status", id: query.id, state: "cancelled", content: "Cancelled" });
    this.host.emit({
      type: "response",
      id: query.id,
      content: partial,
      done: true,
      model: query.model,
      finish_reason: "cancelled",
      usage: null,
      timing: {
        first_token_ms: firstTokenMs === null ? null : Math.round(firstTokenMs),
        total_ms: Math.round(performance.now() - query.receivedAt),
      },
    });
  }

  /** Aborts the query in flight (a client that stopped reading); the queue goes on. */
  stopInFlight(why: AbortWhy): void {
    this.#inFlight?.controller.abort(why);
  }

  /** The session ends here: abort the query in flight and drop the waiting ones. */
  stop(why: AbortWhy): void {
    this.#inFlight?.controller.abort(why);
    this.#queue.drain();
  }

  /** Delivers a client's `tool_result` or `approval`; throws `not_found` when nothing waits. */
  answer(queryId: string, toolCallId: string, answer: ToolAnswer): void {
    const turn = this.#inFlight;
    if (!turn || turn.id !== queryId || !turn.answer(toolCallId, answer)) {
      throw new AgentError(
        "not_found",
        `No ${
          answer.kind === "approval" ? "approval" : "tool result"
        } is awaited for that tool_call_id`,
        { fields: { tool_call_id: toolCallId } },
      );
    }
  }

  /**
   * The session emitted a query's terminal frame: it is no longer open. The
   * open list travels with that frame to the store, so the two are durable
   * together and no other process ends the query a second time.
   */
  noteEnded(id: string): void {
    if (this.#inFlight?.id === id) this.#inFlightEnded = true;
  }

  /** The ids of the queries accepted and not yet ended, running first. */
  openIds(): string[] {
    const ids = this.#queue.ids();
    if (this.#inFlight && !this.#inFlightEnded) ids.unshift(this.#inFlight.id);
    return ids;
  }

  /**
   * Writes the open list ahead of a new query's first frame. Only additions
   * are written this way: an early addition at worst ends a query the client
   * never heard of, while a removal goes with the terminal frame itself.
   */
  #syncOpen(): void {
    if (!this.host.closed) this.host.store.setOpenQueries(this.host.id, this.openIds());
  }

  async #start(query: PendingQuery, checkpoint?: TurnCheckpoint): Promise<void> {
    const turn = new InFlight(query, checkpoint);
    this.#inFlight = turn;
    this.#inFlightEnded = false;
    this.#syncOpen();
    try {
      // The runner renders its own failures as the query's terminal frame.
      await this.run(turn).catch(() => {});
    } finally {
      if (this.#inFlight === turn) this.#inFlight = null;
    }
    const next = this.host.closed ? undefined : this.#queue.shift();
    if (next) this.#start(next);
  }
}
