/**
 * Counts several processes add to, per key (a user) and period (a UTC day, a
 * minute). Each cell holds what this process last read of the global total,
 * what it is sending right now, and what it has not sent yet, so the total
 * it sees is always `known + sending + pending` — read synchronously, which
 * keeps admission synchronous. Nobody syncing: they are plain local counts.
 *
 * store/quota.ts moves them to and from Postgres.
 *
 * @module
 */

/** One key's counts for one period, as sent to or read from the shared store. */
export interface CountRow {
  key: string;
  period: string;
  values: number[];
}

interface Cell {
  known: number[];
  sending: number[];
  pending: number[];
}

interface Entry {
  touched: number;
  cells: Map<string, Cell>;
}

const zeros = (n: number) => new Array<number>(n).fill(0);
const isZero = (v: number[]) => v.every((x) => x === 0);
const sum = (...vs: number[][]) => vs[0].map((_, i) => vs.reduce((t, v) => t + v[i], 0));

/**
 * @example
 * ```ts
 * import { SharedCounts } from "./shared_counts.ts";
 * const counts = new SharedCounts(2); // e.g. tokens and cost
 * counts.add("user-1", "2026-12-01", [120, 0.0012]);
 * counts.total("user-1", "2026-12-01"); // [120, 0.0012]
 * const sent = counts.takePending(); // a sync sends these…
 * counts.settle(sent, [{ key: "user-1", period: "2026-12-01", values: [900, 0.009] }]);
 * counts.total("user-1", "2026-12-01"); // [900, 0.009]: what every process spent
 * ```
 */
export class SharedCounts {
  readonly #entries = new Map<string, Entry>();

  /**
   * @param width how many numbers each count has
   * @param now the clock for idleness, in milliseconds (tests pass their own)
   */
  constructor(readonly width: number, readonly now: () => number = () => performance.now()) {}

  #cell(key: string, period: string, create: boolean): Cell | undefined {
    let entry = this.#entries.get(key);
    if (!entry) {
      if (!create) return undefined;
      entry = { touched: this.now(), cells: new Map() };
      this.#entries.set(key, entry);
    }
    entry.touched = this.now();
    let cell = entry.cells.get(period);
    if (!cell && create) {
      cell = { known: zeros(this.width), sending: zeros(this.width), pending: zeros(this.width) };
      entry.cells.set(period, cell);
    }
    return cell;
  }

  /** Everything counted for `key` in `period`, here and (as of the last sync) elsewhere. */
  total(key: string, period: string): number[] {
    const cell = this.#cell(key, period, false);
    return cell ? sum(cell.known, cell.sending, cell.pending) : zeros(this.width);
  }

  /** Adds to `key`'s count for `period`, to be sent with the next sync. */
  add(key: string, period: string, values: number[]): void {
    const cell = this.#cell(key, period, true)!;
    cell.pending = sum(cell.pending, values);
  }

  /** Marks `key` as in use, so syncs keep reading its totals. */
  touch(key: string): void {
    const entry = this.#entries.get(key);
    if (entry) entry.touched = this.now();
    else this.#entries.set(key, { touched: this.now(), cells: new Map() });
  }

  /** Whether syncs read `key`'s totals (it was used lately). */
  has(key: string): boolean {
    return this.#entries.has(key);
  }

  /** The keys syncs read totals for. */
  keys(): string[] {
    return [...this.#entries.keys()];
  }

  /** How many keys are held. */
  get size(): number {
    return this.#entries.size;
  }

  /** What has not been sent yet; it counts as being sent until {@linkcode settle} or {@linkcode restore}. */
  takePending(): CountRow[] {
    const out: CountRow[] = [];
    for (const [key, entry] of this.#entries) {
      for (const [period, cell] of entry.cells) {
        if (isZero(cell.pending)) continue;
        out.push({ key, period, values: cell.pending });
        cell.sending = sum(cell.sending, cell.pending);
        cell.pending = zeros(this.width);
      }
    }
    return out;
  }

  /**
   * After a sync: `sent` is written, and `read` is each total as the store
   * has it now (`sent` included).
   */
  settle(sent: CountRow[], read: CountRow[]): void {
    for (const row of sent) {
      const cell = this.#entries.get(row.key)?.cells.get(row.period);
      if (cell) cell.sending = sum(cell.sending, row.values.map((v) => -v));
    }
    for (const row of read) {
      const entry = this.#entries.get(row.key);
      if (!entry) continue;
      let cell = entry.cells.get(row.period);
      if (!cell) {
        cell = { known: zeros(this.width), sending: zeros(this.width), pending: zeros(this.width) };
        entry.cells.set(row.period, cell);
      }
      cell.known = row.values;
    }
  }

  /** After a failed sync: what was being sent waits for the next one. */
  restore(sent: CountRow[]): void {
    for (const row of sent) {
      const cell = this.#entries.get(row.key)?.cells.get(row.period);
      if (!cell) continue;
      cell.sending = sum(cell.sending, row.values.map((v) => -v));
      cell.pending = sum(cell.pending, row.values);
    }
  }

  /**
   * Drops the cells of periods that `keep` says are over, and the keys unused
   * for `idleMs` with nothing left to send, unless `held` (e.g. the user has a
   * session here). `local`: nothing will ever send these counts (no shared
   * store), so a period that is over goes, sent or not.
   *
   * @returns how many keys were dropped
   */
  prune(
    keep: (period: string) => boolean,
    idleMs: number,
    opts: { local?: boolean; held?: (key: string) => boolean } = {},
  ): number {
    const { local = false, held } = opts;
    const now = this.now();
    let dropped = 0;
    for (const [key, entry] of this.#entries) {
      let waiting = false;
      for (const [period, cell] of entry.cells) {
        const unsent = !isZero(cell.pending) || !isZero(cell.sending);
        if (!keep(period) && (local || !unsent)) entry.cells.delete(period);
        else if (unsent) waiting = true;
      }
      const idle = now - entry.touched >= idleMs || (local && entry.cells.size === 0);
      if (!waiting && idle && !held?.(key)) {
        this.#entries.delete(key);
        dropped++;
      }
    }
    return dropped;
  }
}
