/**
 * Server-Sent Events reading. The line protocol (fields split across network
 * chunks, CRLF, comments, multi-line data) is handled by `eventsource-parser`,
 * a small, well-kept parser; this module only turns a byte stream into an
 * async sequence of events, and bounds what one event may hold in memory.
 *
 * @module
 */
import { createParser } from "eventsource-parser";

/** One SSE event: a `data` payload, or a comment line such as `: OPENROUTER PROCESSING`. */
export type SseMessage = { kind: "data"; data: string } | { kind: "comment"; text: string };

/** The default of {@linkcode readSse}'s `maxEventBytes`: real events are a few hundred bytes. */
export const DEFAULT_MAX_SSE_EVENT_BYTES = 1_048_576;

/**
 * The stream sent more than `maxEventBytes` without finishing an event (one
 * endless line, or data lines with no blank line between them). Reading stops
 * there, so the upstream cannot make us hold an unbounded string.
 *
 * @example
 * ```ts
 * import { readSse, SseEventTooLargeError } from "./sse.ts";
 * const body = new Response("data: " + "x".repeat(2048)).body!;
 * try {
 *   for await (const msg of readSse(body, { maxEventBytes: 1024 })) console.log(msg);
 * } catch (err) {
 *   if (err instanceof SseEventTooLargeError) console.log(err.limitBytes); // 1024
 * }
 * ```
 */
export class SseEventTooLargeError extends Error {
  constructor(readonly limitBytes: number) {
    super(`The event stream sent more than ${limitBytes} bytes without finishing an event`);
    this.name = "SseEventTooLargeError";
  }
}

/**
 * Reads SSE messages from a response body until it ends. Errors of the
 * underlying stream (a dropped connection) propagate to the caller; more than
 * `maxEventBytes` (default {@linkcode DEFAULT_MAX_SSE_EVENT_BYTES}) without an
 * event ends it with {@linkcode SseEventTooLargeError}.
 *
 * @example
 * ```ts
 * import { readSse } from "./sse.ts";
 * const body = new Response(": OPENROUTER PROCESSING\n\ndata: {\"a\":1}\n\ndata: [DONE]\n\n").body!;
 * for await (const msg of readSse(body)) {
 *   if (msg.kind === "data") console.log(msg.data); // {"a":1}, then [DONE]
 * }
 * ```
 */
export async function* readSse(
  body: ReadableStream<Uint8Array>,
  opts: { maxEventBytes?: number } = {},
): AsyncGenerator<SseMessage> {
  const maxEventBytes = opts.maxEventBytes ?? DEFAULT_MAX_SSE_EVENT_BYTES;
  const pending: SseMessage[] = [];
  // eventsource-parser keeps an unfinished line and an unfinished event's data
  // without limit, so the bytes fed since the last event are counted here.
  // Comments do not count as progress: data lines may continue after one.
  let sinceEvent = 0;
  let sawEvent = false;
  const parser = createParser({
    onEvent: (e) => {
      sawEvent = true;
      pending.push({ kind: "data", data: e.data });
    },
    onComment: (text) => pending.push({ kind: "comment", text }),
  });
  // Decoding in place rather than through a TextDecoderStream saves a stream
  // hop (and its promises) per network chunk, which is per token here.
  const decoder = new TextDecoder();
  const reader = body.getReader();
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      sawEvent = false;
      parser.feed(decoder.decode(value, { stream: true }));
      // After an event, what is left unfinished is at most the rest of this chunk.
      sinceEvent = sawEvent ? 0 : sinceEvent + value.byteLength;
      if (sinceEvent > maxEventBytes) throw new SseEventTooLargeError(maxEventBytes);
      for (let i = 0; i < pending.length; i++) yield pending[i];
      pending.length = 0;
    }
    // A final event without its blank line still counts: some servers omit it.
    parser.feed(decoder.decode() + "\n\n");
    for (let i = 0; i < pending.length; i++) yield pending[i];
  } finally {
    // Cancelling releases the connection when the consumer stops early.
    reader.cancel().catch(() => {});
  }
}
