/**
 * What the durable store has accepted and not yet written, bounded: frames in
 * order, and the latest history, open-query list, creation and deletion of
 * each session. When the database is away for long, the buffer stops growing
 * by dropping frames: first the oldest of detached sessions (nobody is
 * watching them, and most are never resumed), then the oldest of all. Every
 * dropped seq is remembered per session, so a replay that needs it reports a
 * true gap instead of silently skipping it.
 *
 * @module
 */
import type { ChatMessage } from "../model/model.ts";

/** A frame waiting to be written. */
export interface PendingFrame {
  session: string;
  seq: number;
  json: string;
  /**
   * The session's open queries as of this frame, on frames that start or end
   * a query: written in the same statement as the frame, so the two are
   * durable together.
   */
  open?: string[];
}

/** One thing to write; a batch is a list of them, in the order they must be applied. */
export type WriteOp =
  | { kind: "create"; session: string; owner: string | null }
  | ({ kind: "frame" } & PendingFrame)
  | { kind: "history"; session: string; history: ChatMessage[] }
  | { kind: "open"; session: string; ids: string[] }
  /** The turn waiting for people (turn/checkpoint.ts), or null when none waits. */
  | { kind: "suspended"; session: string; turn: unknown }
  | { kind: "delete"; session: string };

/** Bounds of a {@linkcode WriteBuffer}. */
export interface WriteBufferLimits {
  maxFrames: number;
  /** Characters of frame JSON (about bytes for the ASCII most frames are). */
  maxBytes: number;
}

/** Most dropped ranges remembered per session; beyond it neighbours merge. */
const MAX_RANGES = 16;

/**
 * @example
 * ```ts
 * const buf = new WriteBuffer({ maxFrames: 100_000, maxBytes: 16 << 20 });
 * buf.frame({ session: "s1", seq: 1, json: "{}" });
 * const batch = buf.take(1000);
 * ```
 */
export class WriteBuffer {
  #frames: PendingFrame[] = [];
  #head = 0;
  #bytes = 0;
  #creates = new Map<string, string | null>();
  #history = new Map<string, ChatMessage[]>();
  #open = new Map<string, string[]>();
  #suspended = new Map<string, unknown>();
  #deletes = new Set<string>();
  #detached = new Set<string>();
  /** Seqs given up per session, as inclusive ranges in order. */
  #lost = new Map<string, [number, number][]>();
  /** Frames dropped since start. */
  dropped = 0;

  constructor(readonly limits: WriteBufferLimits) {}

  /** Frames waiting. */
  get frames(): number {
    return this.#frames.length - this.#head;
  }

  /** Characters of frames waiting. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Whether nothing at all waits. */
  get empty(): boolean {
    return this.frames === 0 && this.#creates.size === 0 && this.#history.size === 0 &&
      this.#open.size === 0 && this.#suspended.size === 0 && this.#deletes.size === 0;
  }

  create(session: string, owner: string | null): void {
    this.#creates.set(session, owner);
  }

  history(session: string, history: ChatMessage[]): void {
    this.#history.set(session, history);
  }

  open(session: string, ids: string[]): void {
    this.#open.set(session, ids);
  }

  suspended(session: string, turn: unknown): void {
    this.#suspended.set(session, turn);
  }

  /** Forgets everything waiting for the session and queues its deletion. */
  delete(session: string): void {
    this.#creates.delete(session);
    this.#history.delete(session);
    this.#open.delete(session);
    this.#suspended.delete(session);
    this.#detached.delete(session);
    this.#lost.delete(session);
    this.#keep((f) => f.session !== session);
    this.#deletes.add(session);
  }

  /** Drops everything waiting for a session that is no longer this process's to write. */
  discard(session: string): void {
    this.#creates.delete(session);
    this.#history.delete(session);
    this.#open.delete(session);
    this.#suspended.delete(session);
    this.#keep((f) => f.session !== session);
    this.forget(session);
  }

  /** Forgets what is known of a session another process now holds (nothing of it waits). */
  forget(session: string): void {
    this.#detached.delete(session);
    this.#lost.delete(session);
  }

  setAttached(session: string, attached: boolean): void {
    if (attached) this.#detached.delete(session);
    else this.#detached.add(session);
  }

  /**
   * Adds a frame; returns how many frames had to be dropped to stay within
   * the bounds (0 almost always).
   */
  frame(f: PendingFrame): number {
    // The frame's own list is newer than any waiting on its own.
    if (f.open) this.#open.delete(f.session);
    this.#frames.push(f);
    this.#bytes += f.json.length;
    const { maxFrames, maxBytes } = this.limits;
    return this.frames > maxFrames || this.#bytes > maxBytes ? this.#evict() : 0;
  }

  /**
   * Drops frames down to 90% of the bounds in one pass (so a full buffer is
   * not scanned on every append): detached sessions' oldest first, then the
   * oldest of all.
   */
  #evict(): number {
    const targetFrames = Math.floor(this.limits.maxFrames * 0.9);
    const targetBytes = Math.floor(this.limits.maxBytes * 0.9);
    let frames = this.frames;
    let bytes = this.#bytes;
    const over = () => frames > targetFrames || bytes > targetBytes;
    const drop = new Set<PendingFrame>();
    for (const pass of [true, false]) {
      for (let i = this.#head; i < this.#frames.length && over(); i++) {
        const f = this.#frames[i];
        // A frame that starts or ends a query carries the open list: never dropped.
        if (drop.has(f) || f.open || (pass && !this.#detached.has(f.session))) continue;
        drop.add(f);
        frames--;
        bytes -= f.json.length;
      }
    }
    for (const f of drop) this.lose(f.session, f.seq);
    this.#keep((f) => !drop.has(f));
    return drop.size;
  }

  #keep(pred: (f: PendingFrame) => boolean): void {
    const kept: PendingFrame[] = [];
    let bytes = 0;
    for (let i = this.#head; i < this.#frames.length; i++) {
      const f = this.#frames[i];
      if (pred(f)) {
        kept.push(f);
        bytes += f.json.length;
      }
    }
    this.#frames = kept;
    this.#head = 0;
    this.#bytes = bytes;
  }

  /** Records that a frame will never be written (dropped or refused). */
  lose(session: string, seq: number): void {
    this.dropped++;
    const ranges = this.#lost.get(session) ?? [];
    const last = ranges.at(-1);
    if (last && seq === last[1] + 1) last[1] = seq;
    else if (!last || seq > last[1]) ranges.push([seq, seq]);
    else {
      ranges.push([seq, seq]);
      ranges.sort((a, b) => a[0] - b[0]);
    }
    // Bounded: merging two neighbours over-reports a gap, never hides one.
    while (ranges.length > MAX_RANGES) {
      const [a, b] = ranges.splice(0, 2);
      ranges.unshift([a[0], b[1]]);
    }
    this.#lost.set(session, ranges);
  }

  /** The first seq after `after` that was given up for this session, if any. */
  firstLost(session: string, after: number): number | undefined {
    for (const [from, to] of this.#lost.get(session) ?? []) {
      if (to > after) return Math.max(from, after + 1);
    }
    return undefined;
  }

  /** Frames of a session after a seq, still waiting, in order. */
  pendingAfter(session: string, after: number): PendingFrame[] {
    const out: PendingFrame[] = [];
    for (let i = this.#head; i < this.#frames.length; i++) {
      const f = this.#frames[i];
      if (f.session === session && f.seq > after) out.push(f);
    }
    return out;
  }

  /**
   * Takes up to `maxFrames` frames and everything else waiting, as ops in the
   * order they must be applied: creations, then frames and session updates,
   * then deletions.
   */
  take(maxFrames: number): WriteOp[] {
    const ops: WriteOp[] = [];
    for (const [session, owner] of this.#creates) ops.push({ kind: "create", session, owner });
    const end = Math.min(this.#frames.length, this.#head + maxFrames);
    for (let i = this.#head; i < end; i++) {
      const f = this.#frames[i];
      ops.push({ kind: "frame", session: f.session, seq: f.seq, json: f.json, open: f.open });
      this.#bytes -= f.json.length;
    }
    this.#head = end;
    if (this.#head === this.#frames.length) {
      this.#frames = [];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#frames.length) {
      this.#frames = this.#frames.slice(this.#head);
      this.#head = 0;
    }
    for (const [session, history] of this.#history) ops.push({ kind: "history", session, history });
    for (const [session, ids] of this.#open) ops.push({ kind: "open", session, ids });
    for (const [session, turn] of this.#suspended) ops.push({ kind: "suspended", session, turn });
    for (const session of this.#deletes) ops.push({ kind: "delete", session });
    this.#creates = new Map();
    this.#history = new Map();
    this.#open = new Map();
    this.#suspended = new Map();
    this.#deletes = new Set();
    return ops;
  }

  /**
   * Puts ops that could not be written back in front of what came since, so
   * order is kept for the retry. Newer values of the same session win.
   * Returns how many frames had to be dropped to stay within the bounds.
   */
  restore(ops: WriteOp[]): number {
    const frames: PendingFrame[] = [];
    for (const op of ops) {
      if (op.kind === "frame") {
        if (this.#deletes.has(op.session)) continue;
        frames.push({ session: op.session, seq: op.seq, json: op.json, open: op.open });
        this.#bytes += op.json.length;
      } else if (op.kind === "delete") this.#deletes.add(op.session);
      else if (this.#deletes.has(op.session)) continue;
      else if (op.kind === "create" && !this.#creates.has(op.session)) {
        this.#creates.set(op.session, op.owner);
      } else if (op.kind === "history" && !this.#history.has(op.session)) {
        this.#history.set(op.session, op.history);
      } else if (op.kind === "open" && !this.#open.has(op.session)) {
        this.#open.set(op.session, op.ids);
      } else if (op.kind === "suspended" && !this.#suspended.has(op.session)) {
        this.#suspended.set(op.session, op.turn);
      }
    }
    if (frames.length > 0) {
      this.#frames = [...frames, ...this.#frames.slice(this.#head)];
      this.#head = 0;
      const { maxFrames, maxBytes } = this.limits;
      if (this.frames > maxFrames || this.#bytes > maxBytes) return this.#evict();
    }
    return 0;
  }
}
