/**
 * Per-user daily budgets: tokens and OpenRouter credits a user may spend per
 * UTC day, counted from the usage the model reports. Checked synchronously at
 * admission from what this process knows: its own spending at once, other
 * processes' as of the last sync (store/quota.ts), so a user spread over
 * processes overshoots by at most one sync interval's worth of answers.
 *
 * @module
 */
import type { Usage } from "../protocol/wire.ts";
import { SharedCounts } from "./shared_counts.ts";

/** What {@linkcode DailyBudget} bounds; null: that one is not bounded. */
export interface BudgetLimits {
  /** Total tokens (prompt + completion) per user per UTC day. */
  tokens: number | null;
  /** OpenRouter credits per user per UTC day. */
  cost: number | null;
}

/** Why a user may not spend now, and until when. */
export interface BudgetRefusal {
  message: string;
  /** The next UTC midnight, as ISO-8601. */
  resetsAt: string;
  retryAfterMs: number;
}

const DAY_MS = 86_400_000;

/**
 * The UTC day of `ms`, as `YYYY-MM-DD` (the form Postgres's `date` reads and prints).
 *
 * @example
 * ```ts
 * import { utcDay } from "./budget.ts";
 * utcDay(Date.UTC(2026, 11, 1, 23, 59)); // "2026-12-01"
 * ```
 */
export function utcDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/**
 * @example
 * ```ts
 * import { DailyBudget } from "./budget.ts";
 * const budget = new DailyBudget({ tokens: 100_000, cost: 0.5 });
 * budget.spend("user-1", { prompt_tokens: 900, completion_tokens: 100, total_tokens: 1000 });
 * const refusal = budget.check("user-1"); // null: they may go on
 * ```
 */
export class DailyBudget {
  /** Per user and day: [tokens, cost]. */
  readonly counts: SharedCounts;
  readonly #now: () => number;
  #shared = false;
  #prunedDay = "";

  /**
   * @param now the wall clock, in milliseconds since the epoch (tests pass their own)
   */
  constructor(readonly limits: BudgetLimits, now: () => number = () => Date.now()) {
    this.#now = now;
    this.counts = new SharedCounts(2, () => performance.now());
  }

  /**
   * Says a sync keeps these counts in a shared store: then users unused for a
   * while are forgotten (the store has their totals). Without one, this
   * process's counts are the only copy and stay until their day is over.
   */
  share(): void {
    this.#shared = true;
  }

  /** The UTC day now, as `YYYY-MM-DD`. */
  today(): string {
    return utcDay(this.#now());
  }

  /** Counts what one model call used against `user`'s day. */
  spend(user: string, usage: Usage): void {
    const tokens = usage.total_tokens || usage.prompt_tokens + usage.completion_tokens;
    const cost = usage.cost ?? 0;
    if (tokens > 0 || cost > 0) this.counts.add(user, this.today(), [tokens, cost]);
  }

  /** What `user` has spent today, as far as this process knows. */
  spent(user: string): { tokens: number; cost: number } {
    const [tokens, cost] = this.counts.total(user, this.today());
    return { tokens, cost };
  }

  /** Null when `user` may start another query today; else why not and until when. */
  check(user: string): BudgetRefusal | null {
    const now = this.#now();
    const today = utcDay(now);
    if (!this.#shared && today !== this.#prunedDay) this.prune(0);
    // A user the sync did not know of is read from the next sync on.
    if (this.#shared) this.counts.touch(user);
    const [tokens, cost] = this.counts.total(user, today);
    const { tokens: maxTokens, cost: maxCost } = this.limits;
    const over = maxTokens !== null && tokens >= maxTokens
      ? `${tokens} of ${maxTokens} tokens`
      : maxCost !== null && cost >= maxCost
      ? `${round(cost)} of ${maxCost} credits`
      : null;
    if (over === null) return null;
    const midnight = (Math.floor(now / DAY_MS) + 1) * DAY_MS;
    const resetsAt = new Date(midnight).toISOString();
    return {
      message: `Daily budget used up (${over}); it resets at ${resetsAt}`,
      resetsAt,
      retryAfterMs: midnight - now,
    };
  }

  /**
   * Forgets past days, and (with a shared store) users unused for `idleMs`
   * but those `held` says to keep following.
   *
   * @returns how many users were forgotten
   */
  prune(idleMs: number, held?: (user: string) => boolean): number {
    const today = this.today();
    this.#prunedDay = today;
    return this.counts.prune((day) => day >= today, idleMs, { local: !this.#shared, held });
  }
}

/** Credits as a person reads them: no float noise. */
function round(n: number): number {
  return Math.round(n * 1e6) / 1e6;
}
