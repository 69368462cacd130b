/**
 * The shapes every transport shares (see transport.ts): a request, a
 * response whose body is a pull source, and the transport itself.
 *
 * @module
 */

/** One request. */
export interface TransportRequest {
  /** Default `GET`, as with `fetch`. */
  method?: string;
  headers?: HeadersInit;
  body?: string | Uint8Array;
  /** Aborts connecting, waiting for the head, and reading the body. */
  signal?: AbortSignal;
}

/**
 * A response body as a pull source. Every chunk stays valid after the next
 * read (no buffer is reused under a chunk handed out).
 */
export interface BodySource extends AsyncIterable<Uint8Array> {
  /** The next chunk, or null at the end. Network failures reject (a `TypeError`). */
  read(): Promise<Uint8Array | null>;
  /**
   * Stops reading. The connection goes back to the pool when what is left
   * of the body is short and arrives soon; otherwise it is closed.
   */
  cancel(): void;
}

/** A response whose head has arrived. */
export interface TransportResponse {
  status: number;
  statusText: string;
  headers: Headers;
  body: BodySource;
  /** Reads the whole body as UTF-8 text. */
  text(): Promise<string>;
}

/** Sends requests; see the module documentation. */
export interface HttpTransport {
  readonly kind: "fetch" | "socket";
  /**
   * Resolves once the response head arrived. Network failures reject with a
   * `TypeError` (as `fetch` does); an abort rejects with the signal's reason.
   */
  request(url: string | URL, init?: TransportRequest): Promise<TransportResponse>;
  /** Closes every connection it holds; requests in flight fail. */
  close(): void;
}

/**
 * Reads a whole body as text.
 *
 * @example
 * ```ts
 * import { readText } from "./transport_body.ts";
 * import { sourceOfStream } from "./transport.ts";
 * console.log(await readText(sourceOfStream(new Response("hello").body!))); // "hello"
 * ```
 */
export async function readText(body: BodySource): Promise<string> {
  const decoder = new TextDecoder();
  let text = "";
  for (;;) {
    const chunk = await body.read();
    if (chunk === null) return text + decoder.decode();
    text += decoder.decode(chunk, { stream: true });
  }
}

/**
 * An iterator over a {@linkcode BodySource}, for its `Symbol.asyncIterator`;
 * leaving a `for await` loop early cancels the body.
 *
 * @example
 * ```ts
 * import { iterate } from "./transport_body.ts";
 * import type { BodySource } from "./transport.ts";
 * const chunks = [new TextEncoder().encode("hi")];
 * const source: BodySource = {
 *   read: () => Promise.resolve(chunks.shift() ?? null),
 *   cancel: () => {},
 *   [Symbol.asyncIterator]: () => iterate(source),
 * };
 * for await (const c of source) console.log(c.length); // 2
 * ```
 */
export function iterate(source: BodySource): AsyncIterator<Uint8Array> {
  return {
    next: async () => {
      const value = await source.read();
      return value === null ? { done: true, value: undefined } : { done: false, value };
    },
    return: () => {
      source.cancel();
      return Promise.resolve({ done: true, value: undefined });
    },
  };
}
