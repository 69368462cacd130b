/**
 * Server-Sent Events reading. The line protocol (fields split across network
 * chunks, CRLF, comments, multi-line data) is handled by `eventsource-parser`,
 * a small, well-kept parser, behind a fast path for whole one-line events.
 * Two ways to consume a body: {@linkcode readSse}, an async iterator (one
 * promise per event, no async generator), and {@linkcode forEachSse}, a
 * callback per event (one promise per network chunk). Neither goes through
 * a Web Streams reader when the body came from a {@linkcode fetchOver}
 * transport.
 *
 * @module
 */
import { createParser, type EventSourceParser } from "eventsource-parser";
import { type BodySource, sourceOfStream } from "./transport.ts";

/** One SSE event: a `data` payload, or a comment line such as `: OPENROUTER PROCESSING`. */
export type SseMessage = { kind: "data"; data: string } | { kind: "comment"; text: string };

/** Bytes in, messages out: decoding and event splitting, shared by both readers. */
class SseDecoder {
  /** Messages parsed and not yet handed out. */
  readonly out: SseMessage[] = [];
  readonly #parser: EventSourceParser;
  // Decoding in place rather than through a TextDecoderStream saves a stream
  // hop (and its promises) per network chunk, which is per token here.
  readonly #decoder = new TextDecoder();
  /** Whether the decoder may hold the first bytes of a character. */
  #partial = false;
  /** Whether the parser holds nothing (the text so far ended with a blank line). */
  #clean = true;

  constructor() {
    this.#parser = createParser({
      onEvent: (e) => this.out.push({ kind: "data", data: e.data }),
      onComment: (text) => this.out.push({ kind: "comment", text }),
    });
  }

  push(chunk: Uint8Array): void {
    this.#feed(this.#decode(chunk));
  }

  /** The end of the body: a final event without its blank line still counts. */
  end(): void {
    this.#parser.feed(this.#decoder.decode() + "\n\n");
  }

  /**
   * A chunk that ends in ASCII with nothing pending decodes without stream
   * state, which costs half as much; otherwise the decoder keeps a character
   * split across chunks.
   */
  #decode(chunk: Uint8Array): string {
    const last = chunk[chunk.length - 1];
    if (!this.#partial && last < 0x80) return this.#decoder.decode(chunk);
    this.#partial = !(last < 0x80);
    return this.#decoder.decode(chunk, { stream: true });
  }

  /**
   * Text made of whole one-line events (`data: …` or a comment), the shape
   * of every token event, is split here; anything else (multi-line events,
   * other fields, CR line ends, an event cut across chunks) goes to the
   * parser, which then holds nothing again once its text ended with a blank
   * line.
   */
  #feed(text: string): void {
    if (this.#clean && text.endsWith("\n\n") && !text.includes("\r")) {
      const events = text.split("\n\n");
      let simple = true;
      for (let i = 0; i < events.length - 1 && simple; i++) {
        const e = events[i];
        simple = e === "" || (!e.includes("\n") && (e.startsWith("data:") || e[0] === ":"));
      }
      if (simple) {
        for (let i = 0; i < events.length - 1; i++) {
          const e = events[i];
          if (e === "") continue;
          if (e[0] === ":") {
            this.out.push({ kind: "comment", text: e.slice(e[1] === " " ? 2 : 1) });
          } else this.out.push({ kind: "data", data: e.slice(e[5] === " " ? 6 : 5) });
        }
        return;
      }
    }
    this.#parser.feed(text);
    this.#clean = text.endsWith("\n\n");
  }
}

const DONE: IteratorReturnResult<undefined> = { done: true, value: undefined };

/**
 * The events of one body. Events parsed from one network chunk are handed
 * out from an array; the body is read again only when it is empty.
 */
class SseReader implements AsyncIterableIterator<SseMessage> {
  readonly #source: BodySource;
  readonly #sse = new SseDecoder();
  #next = 0;
  #ended = false;

  constructor(source: BodySource) {
    this.#source = source;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<SseMessage>> {
    const out = this.#sse.out;
    if (this.#next < out.length) return Promise.resolve({ done: false, value: out[this.#next++] });
    return this.#pull();
  }

  async #pull(): Promise<IteratorResult<SseMessage>> {
    const out = this.#sse.out;
    out.length = 0;
    this.#next = 0;
    while (!this.#ended) {
      let chunk: Uint8Array | null;
      try {
        chunk = await this.#source.read();
      } catch (err) {
        this.#end();
        throw err;
      }
      if (chunk === null) {
        this.#ended = true;
        this.#sse.end();
      } else this.#sse.push(chunk);
      if (out.length > 0) return { done: false, value: out[this.#next++] };
    }
    return DONE;
  }

  /** A consumer that stops early (`break`, an exception) releases the body. */
  return(): Promise<IteratorResult<SseMessage>> {
    this.#end();
    return Promise.resolve(DONE);
  }

  #end(): void {
    this.#ended = true;
    this.#sse.out.length = 0;
    this.#source.cancel();
  }
}

function sourceOf(body: ReadableStream<Uint8Array> | BodySource): BodySource {
  return body instanceof ReadableStream ? sourceOfStream(body) : body;
}

/**
 * Reads SSE messages from a response body until it ends. Errors of the
 * underlying body (a dropped connection) propagate to the caller; leaving
 * the loop early cancels the body.
 *
 * @example
 * ```ts
 * const res = await fetch("http://127.0.0.1:9999/stream");
 * for await (const msg of readSse(res.body!)) {
 *   if (msg.kind === "data") console.log(msg.data);
 * }
 * ```
 */
export function readSse(
  body: ReadableStream<Uint8Array> | BodySource,
): AsyncIterableIterator<SseMessage> {
  return new SseReader(sourceOf(body));
}

/**
 * Calls `onMessage` for every SSE message of a body, in order, and resolves
 * when the body ends or `onMessage` returns `false` (the body is then
 * cancelled). A promise it returns pauses reading until it settles, and what
 * it resolves to counts the same way; an exception it throws (or a failing
 * body) rejects the whole call, after cancelling the body. Events that
 * arrive together are handled without a promise between them.
 *
 * @example
 * ```ts
 * const res = await fetch("http://127.0.0.1:9999/stream");
 * await forEachSse(res.body!, (msg) => {
 *   if (msg.kind !== "data") return;
 *   if (msg.data === "[DONE]") return false;
 *   console.log(JSON.parse(msg.data));
 * });
 * ```
 */
export async function forEachSse(
  body: ReadableStream<Uint8Array> | BodySource,
  onMessage: (msg: SseMessage) => void | boolean | Promise<void | boolean>,
): Promise<void> {
  const source = sourceOf(body);
  const sse = new SseDecoder();
  const out = sse.out;
  let finished = false;
  try {
    while (!finished) {
      const chunk = await source.read();
      if (chunk === null) {
        finished = true;
        sse.end();
      } else sse.push(chunk);
      for (let i = 0; i < out.length; i++) {
        let verdict = onMessage(out[i]);
        if (verdict instanceof Promise) verdict = await verdict;
        if (verdict === false) {
          if (!finished) source.cancel();
          return;
        }
      }
      out.length = 0;
    }
  } catch (err) {
    if (!finished) source.cancel();
    throw err;
  }
}
