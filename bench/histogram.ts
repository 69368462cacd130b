/**
 * Exact percentiles. Every sample is kept (a run records at most a few
 * hundred thousand) and percentiles are read from the sorted samples with the
 * nearest-rank method, so p99 of 400 probes is the 396th smallest, not an
 * interpolation. This replaces npm `hdr-histogram-js`: it needs no dependency
 * (none enters the project's shared lock file) and has no bucket error.
 *
 * @module
 */

/** A set of samples (milliseconds, or any unit) with exact percentiles. */
export class Samples {
  #values: number[] = [];
  #sorted: Float64Array | null = null;

  /** Records one sample; non-finite values are a harness bug and throw. */
  add(value: number): void {
    if (!Number.isFinite(value)) throw new Error(`not a finite sample: ${value}`);
    this.#values.push(value);
    this.#sorted = null;
  }

  get count(): number {
    return this.#values.length;
  }

  #sortedValues(): Float64Array {
    if (!this.#sorted) this.#sorted = Float64Array.from(this.#values).sort();
    return this.#sorted;
  }

  /**
   * The nearest-rank percentile: the smallest sample with at least `p` % of
   * the samples at or below it. NaN when there are no samples.
   *
   * @example
   * ```ts
   * const s = new Samples();
   * for (const v of [5, 1, 4, 2, 3]) s.add(v);
   * s.percentile(50); // 3
   * s.percentile(100); // 5
   * ```
   */
  percentile(p: number): number {
    const sorted = this.#sortedValues();
    if (sorted.length === 0) return NaN;
    const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
    return sorted[Math.min(rank, sorted.length) - 1];
  }

  get min(): number {
    return this.percentile(0);
  }

  get max(): number {
    return this.percentile(100);
  }

  get mean(): number {
    if (this.#values.length === 0) return NaN;
    let sum = 0;
    for (const v of this.#values) sum += v;
    return sum / this.#values.length;
  }

  /** The usual summary, for JSON output. */
  summary(): { count: number; p50: number; p90: number; p99: number; max: number; mean: number } {
    return {
      count: this.count,
      p50: this.percentile(50),
      p90: this.percentile(90),
      p99: this.percentile(99),
      max: this.max,
      mean: this.mean,
    };
  }
}
