/**
 * Server-Sent Events reading. The line protocol (fields split across network
 * chunks, CRLF, comments, multi-line data) is handled by `eventsource-parser`,
 * a small, well-kept parser; this module only turns a byte stream into an
 * async sequence of events.
 *
 * @module
 */
import { createParser } from "eventsource-parser";

/** One SSE event: a `data` payload, or a comment line such as `: OPENROUTER PROCESSING`. */
export type SseMessage = { kind: "data"; data: string } | { kind: "comment"; text: string };

/**
 * Reads SSE messages from a response body until it ends. Errors of the
 * underlying stream (a dropped connection) propagate to the caller.
 *
 * @example
 * ```ts
 * const res = await fetch("http://127.0.0.1:9999/stream");
 * for await (const msg of readSse(res.body!)) {
 *   if (msg.kind === "data") console.log(msg.data);
 * }
 * ```
 */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseMessage> {
  const pending: SseMessage[] = [];
  const parser = createParser({
    onEvent: (e) => pending.push({ kind: "data", data: e.data }),
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
      parser.feed(decoder.decode(value, { stream: true }));
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
