/**
 * The generation loop: one query of one session, from `thinking` to its one
 * terminal frame — streamed deltas (coalesced and paused while the client is
 * behind), then the final response, or exactly one error — and then the next
 * waiting query.
 *
 * @module
 */
import type { AbortWhy, AgentContext } from "../agent/context.ts";
import type { PendingQuery } from "./queue.ts";
import type { Session } from "../session/session.ts";
import { UpstreamError } from "../model/openrouter.ts";
import { sleep } from "../platform/backoff.ts";

/** How often a paused generation checks whether its client has caught up. */
const DRAIN_POLL_MS = 10;

/** Runs queries; see {@linkcode createGenerator}. */
export interface Generator {
  /** Runs a query to its one terminal frame, then the next waiting one. */
  run(session: Session, q: PendingQuery): Promise<void>;
  /** Ends a query as cancelled, with the text streamed so far. */
  endCancelled(session: Session, q: PendingQuery, partial: string): void;
}

/**
 * @example
 * ```ts
 * const generator = createGenerator(ctx);
 * generator.run(session, query);
 * ```
 */
export function createGenerator(ctx: AgentContext): Generator {
  const { config, log, store, upstream, answered, fail } = ctx;

  function endCancelled(session: Session, q: PendingQuery, partial: string): void {
    session.counters.cancelled++;
    answered.mark(session, q.id);
    session.emit({ type: "status", id: q.id, state: "cancelled", content: "Cancelled" });
    session.emit({
      type: "response",
      id: q.id,
      content: partial,
      done: true,
      model: q.model,
      finish_reason: "cancelled",
      usage: null,
      timing: { first_token_ms: null, total_ms: Math.round(performance.now() - q.receivedAt) },
    });
  }

  async function run(session: Session, q: PendingQuery): Promise<void> {
    const controller = new AbortController();
    const inFlight = { id: q.id, controller, content: "" };
    session.inFlight = inFlight;
    // Deltas not yet sent because the client is behind; sent as one when it catches up.
    let pending = "";
    const flush = () => {
      if (pending === "") return;
      session.emit({ type: "response", id: q.id, delta: pending, done: false });
      pending = "";
    };
    const behind = () => {
      const ws = session.socket;
      return ws !== null && ws.bufferedAmount > config.sendHighWaterBytes;
    };
    // While the client is behind, deltas pile up in `pending` and go out as one
    // frame when it catches up; once `pending` is itself large, reading the
    // upstream waits too, so memory stays bounded by two high-water marks.
    let draining: Promise<void> | null = null;
    const drain = async () => {
      while (behind() && !controller.signal.aborted) {
        await sleep(DRAIN_POLL_MS, controller.signal).catch(() => {});
      }
      draining = null;
      flush();
    };
    session.emit({ type: "status", id: q.id, state: "thinking", content: "Thinking..." });
    log.debug("query_start", { session: session.id, query: q.id, model: q.model });
    try {
      const history = await store.history(session.id);
      const result = await upstream.stream(
        {
          model: q.model,
          messages: [
            { role: "system", content: config.systemPrompt },
            ...history,
            { role: "user", content: q.content },
          ],
          user: session.upstreamUser,
        },
        {
          onDelta: (delta) => {
            inFlight.content += delta;
            if (!q.stream) return;
            pending += delta;
            if (!behind()) return flush();
            draining ??= drain();
            if (pending.length >= config.sendHighWaterBytes) return draining;
          },
          onRetry: ({ attempt, delayMs, code }) => {
            session.emit({
              type: "status",
              id: q.id,
              state: "retrying",
              content: `The model provider failed (${code}); retrying in ${delayMs} ms`,
              attempt,
              delay_ms: delayMs,
            });
          },
        },
        controller.signal,
      );
      flush();
      await store.appendHistory(session.id, [
        { role: "user", content: q.content },
        { role: "assistant", content: result.content },
      ]);
      const totalMs = Math.round(performance.now() - q.receivedAt);
      const firstTokenMs = result.firstTokenMs === null ? null : Math.round(result.firstTokenMs);
      session.counters.responses++;
      session.counters.completionTokens += result.usage?.completion_tokens ?? 0;
      answered.mark(session, q.id);
      session.emit({
        type: "response",
        id: q.id,
        content: result.content,
        done: true,
        model: result.model,
        finish_reason: result.finishReason,
        usage: result.usage,
        timing: { first_token_ms: firstTokenMs, total_ms: totalMs },
      });
      log.info("query_done", {
        session: session.id,
        query: q.id,
        model: result.model,
        first_token_ms: firstTokenMs,
        total_ms: totalMs,
        attempts: result.attempts,
        completion_tokens: result.usage?.completion_tokens,
      });
    } catch (err) {
      const why = controller.signal.aborted ? controller.signal.reason as AbortWhy : undefined;
      flush();
      if (why === "slow_consumer") {
        fail(session, "slow_consumer", "The client is not reading its frames; answer stopped", {
          id: q.id,
          retryable: true,
        });
      } else if (why === "cancel") {
        endCancelled(session, q, inFlight.content);
      } else if (why === undefined) {
        // "closed" and "released" end the session here: nobody is left to tell.
        const e = err instanceof UpstreamError ? err : undefined;
        if (!e) {
          log.error("query_internal_error", { session: session.id, query: q.id, err: String(err) });
        }
        log.info("query_failed", { session: session.id, query: q.id, code: e?.code });
        fail(
          session,
          e?.code ?? "internal_error",
          e?.message ?? "Something went wrong on the server",
          {
            id: q.id,
            retryable: e?.retryable ?? true,
            ...(e?.retryAfterMs !== undefined ? { retry_after_ms: e.retryAfterMs } : {}),
          },
        );
      }
    } finally {
      if (session.inFlight === inFlight) session.inFlight = null;
    }
    const next = session.closed ? undefined : session.queue.shift();
    if (next) run(session, next);
    if (!session.closed) session.syncOpenQueries();
  }

  return { run, endCancelled };
}
