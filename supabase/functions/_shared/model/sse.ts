/**
 * Server-Sent Events reading. The line protocol (fields split across network
 * chunks, CRLF, comments, multi-line data) is handled by `eventsource-parser`,
 * a small, well-kept parser, behind a fast path for whole one-line events.
 * Two ways to consume a body: {@linkcode readSse}, an async iterator (one
 * promise per event, no async generator), and {@linkcode forEachSse}, a
 * callback per event (one promise per network chunk). Neither goes through
 * a Web Streams reader when the body came from a {@linkcode fetchOver}
 * transport. Both bound what one event may hold: more than `maxEventBytes`
 * without finishing an event ends the read with {@linkcode SseEventTooLargeError}.
 *
 * @module
 */
import { createParser, type EventSourceParser } from "eventsource-parser";
import { type BodySource, sourceOfStream } from "./transport.ts";

/** One SSE event: a `data` payload, or a comment line such as `: OPENROUTER PROCESSING`. */
export type SseMessage = { kind: "data"; data: string } | { kind: "comment"; text: string };

/** The default `maxEventBytes`: real events are a few hundred bytes. */
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

/** Options of both readers. */
export interface SseOptions {
  /** Most bytes read without an event finishing (default {@linkcode DEFAULT_MAX_SSE_EVENT_BYTES}). */
  maxEventBytes?: number;
}

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
  /**
   * Characters fed since the last data event finished: the parser buffers an
   * unfinished event without limit, so it is counted here. Comments do not
   * count as progress: data lines may continue after one.
   */
  #sinceEvent = 0;
  /** Text of a line not finished yet (no newline seen since). */
  readonly #held: string[] = [];
  readonly #maxEventBytes: number;

  constructor(opts: SseOptions = {}) {
    this.#maxEventBytes = opts.maxEventBytes ?? DEFAULT_MAX_SSE_EVENT_BYTES;
    this.#parser = createParser({
      onEvent: (e) => this.out.push({ kind: "data", data: e.data }),
      onComment: (text) => this.out.push({ kind: "comment", text }),
    });
  }

  push(chunk: Uint8Array): void {
    let text = this.#decode(chunk);
    if (!text.includes("\n")) {
      // Part of one line: held until the line ends, so a long line is copied once,
      // not once per chunk (the parser would join it chunk by chunk).
      this.#held.push(text);
      this.#sinceEvent += text.length;
      if (this.#sinceEvent > this.#maxEventBytes) {
        throw new SseEventTooLargeError(this.#maxEventBytes);
      }
      return;
    }
    if (this.#held.length > 0) {
      const held = this.#held.join("");
      this.#held.length = 0;
      // The held part was counted when it came; it is counted again with the line below.
      this.#sinceEvent -= held.length;
      text = held + text;
    }
    const before = this.#dataEvents();
    this.#feed(text);
    if (this.#dataEvents() > before) {
      // What follows the last blank line is the start of the next event.
      const end = text.lastIndexOf("\n\n");
      this.#sinceEvent = end < 0 ? text.length : text.length - end - 2;
    } else this.#sinceEvent += text.length;
    if (this.#sinceEvent > this.#maxEventBytes) {
      throw new SseEventTooLargeError(this.#maxEventBytes);
    }
  }

  #dataEvents(): number {
    let n = 0;
    for (const m of this.out) if (m.kind === "data") n++;
    return n;
  }

  /** The end of the body: a final event without its blank line still counts. */
  end(): void {
    this.#parser.feed(this.#held.join("") + this.#decoder.decode() + "\n\n");
    this.#held.length = 0;
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
  readonly #sse: SseDecoder;
  #next = 0;
  #ended = false;

  constructor(source: BodySource, opts: SseOptions) {
    this.#source = source;
    this.#sse = new SseDecoder(opts);
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
      try {
        if (chunk === null) {
          this.#ended = true;
          this.#sse.end();
        } else this.#sse.push(chunk);
      } catch (err) {
        this.#end();
        throw err;
      }
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
 * import { readSse } from "./sse.ts";
 * const body = new Response(": OPENROUTER PROCESSING\n\ndata: {\"a\":1}\n\ndata: [DONE]\n\n").body!;
 * for await (const msg of readSse(body)) {
 *   if (msg.kind === "data") console.log(msg.data); // {"a":1}, then [DONE]
 * }
 * ```
 */
export function readSse(
  body: ReadableStream<Uint8Array> | BodySource,
  opts: SseOptions = {},
): AsyncIterableIterator<SseMessage> {
  return new SseReader(sourceOf(body), opts);
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
 * import { forEachSse } from "./sse.ts";
 * const body = new Response('data: {"a":1}\n\ndata: [DONE]\n\n').body!;
 * await forEachSse(body, (msg) => {
 *   if (msg.kind !== "data") return;
 *   if (msg.data === "[DONE]") return false;
 *   console.log(JSON.parse(msg.data)); // { a: 1 }
 * });
 * ```
 */
export async function forEachSse(
  body: ReadableStream<Uint8Array> | BodySource,
  onMessage: (msg: SseMessage) => void | boolean | Promise<void | boolean>,
  opts: SseOptions = {},
): Promise<void> {
  const source = sourceOf(body);
  const sse = new SseDecoder(opts);
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
