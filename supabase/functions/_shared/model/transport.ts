/**
 * The HTTP transport the upstream client reads the model's stream through.
 *
 * Reading a streamed body through `fetch` costs a Web Streams reader per
 * chunk, and a chunk is a token here: it was the largest single cost per
 * relayed token (docs/benchmarks.md). This module gives the model backend
 * one small interface with two implementations:
 *
 * - `fetch`: the runtime's `fetch`, HTTP/2 when the server offers it,
 *   proxies from `HTTPS_PROXY`/`HTTP_PROXY`; the documented fallback;
 * - `socket`: a lean HTTP/1.1 client on `Deno.connect` / `Deno.connectTls`
 *   (`transport_socket.ts`), TLS with the runtime's certificate checks,
 *   keep-alive pooling, chunked and content-length bodies, abort on signal.
 *
 * `auto` picks `socket` unless a proxy is configured in the environment
 * (the socket client does not speak to proxies) or the runtime lacks
 * `Deno.connectTls`. {@linkcode fetchOver} turns either into a
 * `fetch`-compatible function, so code written against `fetch` can use it
 * unchanged; `readSse` (sse.ts) reads such a body without Web Streams.
 *
 * @module
 */
import { SocketTransport, type SocketTransportOptions } from "./transport_socket.ts";
import {
  type BodySource,
  type HttpTransport,
  iterate,
  readText,
  type TransportRequest,
  type TransportResponse,
} from "./transport_body.ts";

export type { SocketTransportOptions } from "./transport_socket.ts";
export { SocketTransport } from "./transport_socket.ts";
export type {
  BodySource,
  HttpTransport,
  TransportRequest,
  TransportResponse,
} from "./transport_body.ts";
export { iterate, readText } from "./transport_body.ts";

/** What `UPSTREAM_TRANSPORT` may say. */
export type TransportKind = "auto" | "fetch" | "socket";

/**
 * A {@linkcode BodySource} over a Web Streams body (what `fetch` returns);
 * a body made by {@linkcode fetchOver} gives back its transport's own source.
 *
 * @example
 * ```ts
 * import { sourceOfStream } from "./transport.ts";
 * const source = sourceOfStream(new Response("data: hi\n\n").body!);
 * for (let c = await source.read(); c !== null; c = await source.read()) console.log(c.length);
 * ```
 */
export function sourceOfStream(stream: ReadableStream<Uint8Array>): BodySource {
  const fast = fastSources.get(stream);
  if (fast) return fast;
  const reader = stream.getReader();
  const source: BodySource = {
    read: async () => {
      const { value, done } = await reader.read();
      return done ? null : value;
    },
    cancel: () => void reader.cancel().catch(() => {}),
    [Symbol.asyncIterator]: () => iterate(source),
  };
  return source;
}

/** The `fetch` transport: the runtime's own client. */
export class FetchTransport implements HttpTransport {
  readonly kind = "fetch";

  /**
   * @example
   * ```ts
   * import { FetchTransport } from "./transport.ts";
   * export async function status(url: string) {
   *   const res = await new FetchTransport().request(url, { method: "GET" });
   *   return res.status;
   * }
   * ```
   */
  constructor(readonly fetchImpl: typeof fetch = fetch) {}

  async request(url: string | URL, init: TransportRequest = {}): Promise<TransportResponse> {
    const res = await this.fetchImpl(url, { ...init, body: init.body as BodyInit | undefined });
    const body = res.body ? sourceOfStream(res.body) : EMPTY_BODY;
    return {
      status: res.status,
      statusText: res.statusText,
      headers: res.headers,
      body,
      text: () => readText(body),
    };
  }

  close(): void {}
}

const EMPTY_BODY: BodySource = {
  read: () => Promise.resolve(null),
  cancel: () => {},
  [Symbol.asyncIterator]: () => iterate(EMPTY_BODY),
};

/**
 * Which transport `kind` means here: `auto` is `socket` unless a proxy is
 * configured (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, any case), which only
 * `fetch` honours, or `Deno.connectTls` is missing.
 *
 * @example
 * ```ts
 * resolveTransportKind("auto", { HTTPS_PROXY: "http://proxy:3128" }); // "fetch"
 * ```
 */
export function resolveTransportKind(
  kind: TransportKind,
  env: Record<string, string | undefined> = readProxyEnv(),
): "fetch" | "socket" {
  if (kind !== "auto") return kind;
  const proxied = Object.entries(env).some(([k, v]) =>
    /^(https?|all)_proxy$/i.test(k) && v !== undefined && v !== ""
  );
  const sockets = typeof Deno.connect === "function" && typeof Deno.connectTls === "function";
  return !proxied && sockets ? "socket" : "fetch";
}

function readProxyEnv(): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = {};
  for (const name of ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"]) {
    try {
      env[name] = Deno.env.get(name);
    } catch {
      // No env permission: nothing configured that we could honour anyway.
    }
  }
  return env;
}

/**
 * Creates a transport.
 *
 * @example
 * ```ts
 * import { createTransport } from "./transport.ts";
 * export async function download(url: string) {
 *   const transport = createTransport("auto");
 *   try {
 *     const res = await transport.request(url, { method: "GET" });
 *     for await (const chunk of res.body) console.log(chunk.length);
 *   } finally {
 *     transport.close();
 *   }
 * }
 * ```
 */
export function createTransport(
  kind: TransportKind,
  opts: SocketTransportOptions = {},
): HttpTransport {
  return resolveTransportKind(kind) === "socket" ? new SocketTransport(opts) : new FetchTransport();
}

/** Bodies handed out as Web Streams whose source `readSse` can read directly. */
const fastSources = new WeakMap<ReadableStream<Uint8Array>, BodySource>();

/**
 * A `Response`-shaped view of a {@linkcode TransportResponse}: `status`,
 * `statusText`, `ok`, `headers`, `body` (a Web Stream, made on first use),
 * `bodyUsed`, `text()`, `json()`, `arrayBuffer()`, `bytes()`.
 */
class TransportBackedResponse {
  readonly ok: boolean;
  readonly redirected = false;
  readonly type = "basic";
  #stream: ReadableStream<Uint8Array> | null = null;
  #used = false;

  constructor(readonly url: string, readonly res: TransportResponse) {
    this.ok = res.status >= 200 && res.status < 300;
  }

  get status(): number {
    return this.res.status;
  }

  get statusText(): string {
    return this.res.statusText;
  }

  get headers(): Headers {
    return this.res.headers;
  }

  get bodyUsed(): boolean {
    return this.#used;
  }

  get body(): ReadableStream<Uint8Array> {
    if (this.#stream) return this.#stream;
    const source = this.res.body;
    // highWaterMark 0: nothing is pulled until someone reads, so a reader
    // that goes to the source directly (readSse) loses nothing.
    this.#stream = new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        this.#used = true;
        const chunk = await source.read();
        if (chunk === null) controller.close();
        else controller.enqueue(chunk);
      },
      cancel: () => source.cancel(),
    }, { highWaterMark: 0 });
    fastSources.set(this.#stream, source);
    return this.#stream;
  }

  text(): Promise<string> {
    this.#consume();
    return this.res.text();
  }

  async json(): Promise<unknown> {
    return JSON.parse(await this.text());
  }

  async bytes(): Promise<Uint8Array> {
    this.#consume();
    const parts: Uint8Array[] = [];
    let length = 0;
    for (let c = await this.res.body.read(); c !== null; c = await this.res.body.read()) {
      parts.push(c);
      length += c.length;
    }
    const out = new Uint8Array(length);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  async arrayBuffer(): Promise<ArrayBuffer> {
    return (await this.bytes()).buffer as ArrayBuffer;
  }

  #consume(): void {
    if (this.#used) throw new TypeError("Body already consumed");
    this.#used = true;
  }
}

/**
 * A `fetch`-compatible function over a transport, for code written against
 * `fetch` (the upstream client takes one). Takes a URL string or `URL`, and
 * a string or byte body; `fetch` itself is returned for the `fetch` kind.
 *
 * @example
 * ```ts
 * import { createTransport, fetchOver } from "./transport.ts";
 * import { openRouter } from "./openrouter.ts";
 * const transport = createTransport("auto");
 * const model = openRouter({ fetch: fetchOver(transport) });
 * console.log(typeof model); // "function": completed from the config at start
 * transport.close();
 * ```
 */
export function fetchOver(transport: HttpTransport): typeof fetch {
  if (transport instanceof FetchTransport) return transport.fetchImpl;
  const adapted = async (input: RequestInfo | URL, init: RequestInit = {}) => {
    if (input instanceof Request) {
      throw new TypeError("this fetch takes a URL, not a Request");
    }
    const body = init.body;
    if (
      body !== undefined && body !== null && typeof body !== "string" &&
      !(body instanceof Uint8Array)
    ) {
      throw new TypeError("this fetch takes a string or Uint8Array body");
    }
    const res = await transport.request(input, {
      method: init.method,
      headers: init.headers,
      body: body ?? undefined,
      signal: init.signal ?? undefined,
    });
    return new TransportBackedResponse(String(input), res) as unknown as Response;
  };
  return adapted as typeof fetch;
}
