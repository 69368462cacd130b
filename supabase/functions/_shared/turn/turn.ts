/**
 * One turn: a query of one session from `thinking` to its one terminal frame.
 * It asks the model, streams text (coalesced while the client is behind, and
 * pulling the model no faster than the client reads), runs the tools the model
 * asks for and asks again, up to `MAX_TOOL_ITERATIONS` model calls; then the
 * final response, or exactly one error. Every failure is rendered here, once.
 *
 * @module
 */
import type { Config } from "../platform/config.ts";
import type { Logger } from "../platform/log.ts";
import type { ChatMessage, ModelBackend } from "../model/model.ts";
import type { AgentDefinition, TurnContext, TurnOutcome, TurnParams } from "../agent/definition.ts";
import type { ToolSet } from "../agent/tools.ts";
import { AgentError, errorFrame } from "../protocol/errors.ts";
import type { Usage } from "../protocol/wire.ts";
import type { Session } from "../session/session.ts";
import { sleep } from "../platform/backoff.ts";
import type { AbortWhy, InFlight } from "./turns.ts";
import { runToolCalls } from "./tool_calls.ts";
import type { CheckpointCall, TurnCheckpoint } from "./checkpoint.ts";

/** How often a paused turn checks whether its client has caught up. */
const DRAIN_POLL_MS = 10;

/** What a turn needs. */
export interface TurnDeps {
  config: Config;
  log: Logger;
  model: ModelBackend;
  agent: AgentDefinition;
  tools: ToolSet;
  /** The context hooks and tools get for this turn. */
  contextFor(session: Session, turn: InFlight): TurnContext;
  /** Counts what one model call used, as it reported it, against the session's user. */
  spend?(session: Session, usage: Usage): void;
  /** Throws when the session's user may not start another turn now (e.g. over their budget). */
  admit?(session: Session): void;
}

function addUsage(total: Usage | null, u: Usage): Usage {
  if (!total) return { ...u };
  const sum: Usage = {
    prompt_tokens: total.prompt_tokens + u.prompt_tokens,
    completion_tokens: total.completion_tokens + u.completion_tokens,
    total_tokens: total.total_tokens + u.total_tokens,
  };
  if (total.cost !== undefined || u.cost !== undefined) {
    sum.cost = (total.cost ?? 0) + (u.cost ?? 0);
  }
  return sum;
}

/**
 * Runs turns of a session.
 *
 * @example
 * ```ts ignore
 * const runTurn = createTurnRunner(deps);
 * const session = new Session(id, store, opts, who, (turn) => runTurn(session, turn));
 * ```
 */
export function createTurnRunner(
  deps: TurnDeps,
): (session: Session, turn: InFlight) => Promise<void> {
  const { config, log, model, agent } = deps;

  async function system(ctx: TurnContext): Promise<string> {
    const s = agent.system;
    if (s === undefined) return config.systemPrompt;
    return typeof s === "string" ? s : await s(ctx);
  }

  async function endHook(outcome: TurnOutcome, ctx: TurnContext): Promise<void> {
    if (!agent.onTurnEnd) return;
    try {
      await agent.onTurnEnd(outcome, ctx);
    } catch (err) {
      log.error("on_turn_end_failed", { query: outcome.id, err: String(err).slice(0, 300) });
    }
  }

  return async function run(session: Session, turn: InFlight): Promise<void> {
    const q = turn.query;
    const signal = turn.signal;
    const started = performance.now();
    const ctx = deps.contextFor(session, turn);
    const durable = session.store.durable;
    // Deltas not yet sent because the client is behind; sent as one when it catches up.
    let pending = "";
    const flush = () => {
      if (pending === "") return;
      session.emit({ type: "response", id: q.id, delta: pending, done: false });
      pending = "";
    };
    const behind = () => session.backlog > config.sendHighWaterBytes;
    // While the client is behind, deltas pile up in `pending` and go out as one
    // frame when it catches up; once `pending` is itself large, pulling the model
    // waits too, so memory stays bounded by two high-water marks.
    let draining: Promise<void> | null = null;
    const drain = async () => {
      // A reader that stays behind this long has stopped: end its answer, free the model call.
      const giveUpAt = performance.now() + config.slowConsumerMs;
      while (behind() && !signal.aborted) {
        if (performance.now() > giveUpAt) {
          session.stoppedReading();
          break;
        }
        await sleep(DRAIN_POLL_MS, signal).catch(() => {});
      }
      draining = null;
      flush();
    };
    const resumed = turn.checkpoint;
    /** Whether a checkpoint of this turn may be in the store, to be cleared when it ends. */
    let written = resumed !== undefined;
    let modelName = resumed?.modelName ?? q.model ?? model.defaultModel;
    let usage: Usage | null = resumed?.usage ?? null;
    let reasoning = resumed?.reasoning ?? "";
    let iterations = resumed?.iterations ?? 0;
    let toolCalls = resumed?.toolCalls ?? 0;
    let finishReason = "stop";
    if (resumed) {
      turn.content = resumed.content;
      turn.firstTokenMs = resumed.firstTokenMs;
    }
    const outcome = (error: TurnOutcome["error"], reason = finishReason): TurnOutcome => ({
      id: q.id,
      finishReason: error ? "error" : reason,
      content: turn.content,
      model: modelName,
      usage,
      timing: {
        first_token_ms: turn.firstTokenMs === null ? null : Math.round(turn.firstTokenMs),
        total_ms: Math.round(performance.now() - q.receivedAt),
      },
      iterations,
      toolCalls,
      error,
    });
    if (!resumed) {
      session.emit({
        type: "status",
        id: q.id,
        state: "thinking",
        content: "Thinking...",
        iteration: 1,
      });
    }
    log.debug("query_start", { session: session.id, query: q.id, resumed: !!resumed });
    try {
      // Queued behind answers that used up the budget: refused now, not answered.
      if (!resumed) deps.admit?.(session);
      const tools = deps.tools.forQuery(q.clientTools);
      let params: TurnParams | null;
      let messages: ChatMessage[];
      let added: ChatMessage[];
      if (resumed) {
        ({ params, messages, added } = resumed);
      } else {
        const [history, prompt, p] = await Promise.all([
          session.store.history(session.id),
          system(ctx),
          agent.params?.(ctx),
        ]);
        params = p ?? null;
        modelName = params?.model ?? modelName;
        added = [{ role: "user", content: q.content }];
        messages = [{ role: "system", content: prompt }, ...history, ...added];
      }
      /** Runs one model turn's tool calls; with a durable store, waiting ones are written down. */
      const runCalls = async (
        calls: CheckpointCall[],
        text: string,
        finished: Record<string, string>,
        resuming: boolean,
      ) => {
        const waits = calls.some((c) => {
          const t = tools.get(c.name);
          return t !== undefined && (t.needsApproval || t.executor === "client");
        });
        const checkpoint = (): TurnCheckpoint => ({
          query: {
            id: q.id,
            content: q.content,
            model: q.model,
            stream: q.stream,
            metadata: q.metadata,
            clientTools: q.clientTools,
          },
          modelName,
          params,
          messages,
          added,
          iterations,
          toolCalls,
          usage,
          reasoning,
          content: turn.content,
          firstTokenMs: turn.firstTokenMs,
          text,
          calls,
          finished,
        });
        const keep = durable && waits;
        if (keep) {
          written = true;
          session.store.setSuspended(session.id, checkpoint());
        }
        const exchange = await runToolCalls(
          {
            turn,
            tools,
            ctx,
            iteration: iterations,
            emit: (f) => session.emit(f),
            log,
            timeouts: {
              serverMs: config.toolTimeoutMs,
              clientMs: config.clientToolTimeoutMs,
              approvalMs: config.approvalTimeoutMs,
            },
            finished,
            resuming,
            onResult: (id, content) => {
              finished[id] = content;
              if (keep && !signal.aborted) session.store.setSuspended(session.id, checkpoint());
            },
          },
          calls,
          text,
        );
        messages.push(...exchange);
        added.push(...exchange);
      };
      let text = "";
      if (resumed) {
        await runCalls(resumed.calls, resumed.text, { ...resumed.finished }, true);
      }
      while (true) {
        iterations++;
        if (iterations > 1) {
          session.emit({
            type: "status",
            id: q.id,
            state: "thinking",
            content: "Thinking...",
            iteration: iterations,
          });
        }
        text = "";
        const calls: CheckpointCall[] = [];
        const events = model.stream({
          model: modelName,
          messages,
          tools: tools.offered.length > 0 ? tools.offered : undefined,
          temperature: params?.temperature,
          maxTokens: params?.maxTokens,
          extra: params?.extra,
          user: session.upstreamUser,
        }, signal);
        for await (const e of events) {
          // Checked per event: a backend that ignores its signal must still stop on cancel.
          if (signal.aborted) throw signal.reason;
          switch (e.type) {
            case "text":
              turn.firstTokenMs ??= performance.now() - started;
              if (turn.content.length + e.text.length > config.maxAnswerChars) {
                throw new AgentError(
                  "answer_too_large",
                  `The answer passed ${config.maxAnswerChars} characters and was stopped`,
                );
              }
              turn.content += e.text;
              text += e.text;
              if (!q.stream) break;
              pending += e.text;
              if (!behind()) flush();
              else {
                draining ??= drain();
                if (pending.length >= config.sendHighWaterBytes) await draining;
              }
              break;
            case "reasoning":
              reasoning += e.text;
              if (config.streamReasoning && q.stream) {
                flush();
                session.emit({ type: "reasoning", id: q.id, delta: e.text });
              }
              break;
            case "tool_call":
              calls.push({ id: e.id, name: e.name, arguments: e.arguments });
              break;
            case "usage":
              usage = addUsage(usage, e.usage);
              deps.spend?.(session, e.usage);
              break;
            case "retry":
              session.emit({
                type: "status",
                id: q.id,
                state: "retrying",
                content: `The model provider failed (${e.code}); retrying in ${e.delayMs} ms`,
                attempt: e.attempt,
                delay_ms: e.delayMs,
              });
              break;
            case "finish":
              finishReason = e.reason;
              modelName = e.model;
              break;
          }
        }
        flush();
        if (calls.length === 0) break;
        if (iterations >= config.maxToolIterations) {
          finishReason = "max_iterations";
          break;
        }
        toolCalls += calls.length;
        await runCalls(calls, text, {}, false);
      }
      added.push({ role: "assistant", content: text });
      await session.store.appendHistory(session.id, added);
      if (written) session.store.setSuspended(session.id, null);
      session.counters.responses++;
      session.counters.completionTokens += usage?.completion_tokens ?? 0;
      session.turns.markAnswered(q.id);
      const done = outcome(null);
      const final: Record<string, unknown> = {
        type: "response",
        id: q.id,
        content: turn.content,
        done: true,
        model: modelName,
        finish_reason: finishReason,
        usage,
        timing: done.timing,
        iterations,
        tool_calls: toolCalls,
      };
      if (reasoning !== "" && config.streamReasoning) final.reasoning = reasoning;
      session.emit(final as never);
      log.info("query_done", {
        session: session.id,
        query: q.id,
        model: modelName,
        first_token_ms: done.timing.first_token_ms,
        total_ms: done.timing.total_ms,
        iterations,
        completion_tokens: usage?.completion_tokens,
      });
      await endHook(done, ctx);
    } catch (err) {
      const why = signal.aborted ? signal.reason as AbortWhy : undefined;
      flush();
      // A released session keeps its waiting turn for the process that takes it over.
      if (written && why !== "released") session.store.setSuspended(session.id, null);
      if (why === "cancel") {
        session.turns.endCancelled(q, turn.content, turn.firstTokenMs);
        await endHook(outcome(null, "cancelled"), ctx);
        return;
      }
      // "closed" and "released" end the session here: nobody is left to tell.
      if (why === "closed" || why === "released") return;
      const e = why === "slow_consumer"
        ? new AgentError(
          "slow_consumer",
          "The client is not reading its frames; answer stopped",
          { retryable: true },
        )
        : err;
      if (!(e instanceof AgentError)) {
        log.error("query_internal_error", { session: session.id, query: q.id, err: String(err) });
      }
      const frame = errorFrame(e, q.id);
      log.info("query_failed", { session: session.id, query: q.id, code: frame.code });
      session.counters.errors++;
      session.emit(frame);
      await endHook(outcome({ code: frame.code, message: frame.message }), ctx);
    }
  };
}
