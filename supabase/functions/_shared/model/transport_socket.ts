/**
 * A lean HTTP/1.1 client on `Deno.connect` / `Deno.connectTls`, for reading
 * long streamed responses (SSE) at a fraction of `fetch`'s CPU per chunk:
 * one socket read per network chunk, no Web Streams, no copy of the payload.
 *
 * What it does: `http:` and `https:` URLs; TLS through the runtime's rustls
 * with its certificate and hostname checks (extra roots with `caCerts`);
 * ALPN `http/1.1`; chunked, content-length and read-until-close bodies;
 * keep-alive pooling per origin (idle sockets are watched, so one the server
 * closed is dropped at once; a request that finds a pooled socket dead
 * before any byte of the answer is sent again on a fresh one); `1xx` heads
 * skipped; abort at any point through the request's signal, which closes
 * the socket. What it does not: proxies, redirects, HTTP/2, content
 * encodings (it asks for `identity`), request bodies other than a string or
 * bytes. `fetch` does all of that: `UPSTREAM_TRANSPORT=fetch`.
 *
 * @module
 */
import {
  type BodySource,
  type HttpTransport,
  iterate,
  readText,
  type TransportRequest,
  type TransportResponse,
} from "./transport_body.ts";

/** Options of {@linkcode SocketTransport}. */
export interface SocketTransportOptions {
  /** PEM root certificates trusted in addition to the runtime's. */
  caCerts?: string[];
  /** Idle sockets kept per origin (default 128). */
  maxIdlePerOrigin?: number;
  /** How long an idle socket is kept (default 60 s; a server's `Keep-Alive: timeout` shortens it). */
  idleTimeoutMs?: number;
  /** Bytes of each socket's read buffer (default 4 KiB; grows for a large head). */
  readBufferBytes?: number;
  /** Largest response head accepted (default 64 KiB). */
  maxHeadBytes?: number;
}

const encoder = new TextEncoder();
const latin1 = new TextDecoder("latin1");

/** After `cancel()`, at most this much of the rest of a body is read to keep its socket. */
const DRAIN_MAX_BYTES = 64 * 1024;
const DRAIN_MAX_MS = 500;
/** A read is never given less room than this; a fresh buffer is taken instead. */
const MIN_READ_BYTES = 1024;

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const BAD_VALUE = /[\r\n\0]/;

/** A socket failure, shaped like `fetch`'s. */
function networkError(message: string, cause?: unknown): TypeError {
  return new TypeError(message, cause === undefined ? undefined : { cause });
}

interface Origin {
  key: string;
  hostname: string;
  port: number;
  tls: boolean;
}

/** One socket and its read buffer. */
class Connection {
  buf: Uint8Array;
  start = 0;
  end = 0;
  /** Whether a view into `buf` was handed out: then `buf` is never written below `end`. */
  lent = false;
  /** Requests sent on this socket. */
  served = 0;
  /** A read issued while idle, to notice a server closing the socket. */
  pending: Promise<number | null> | null = null;
  idle = false;
  closed = false;
  idleTimer: ReturnType<typeof setTimeout> | undefined;
  keepAliveMs: number;

  constructor(
    readonly conn: Deno.Conn,
    readonly origin: Origin,
    readonly opts: Required<Omit<SocketTransportOptions, "caCerts">>,
    readonly onClose: (c: Connection) => void,
  ) {
    this.buf = new Uint8Array(opts.readBufferBytes);
    this.keepAliveMs = opts.idleTimeoutMs;
  }

  /** Room for the next read: the tail of `buf`, or a fresh buffer holding the unread bytes. */
  room(): Uint8Array {
    if (!this.lent) {
      if (this.start === this.end) this.start = this.end = 0;
      else if (this.start > 0) {
        this.buf.copyWithin(0, this.start, this.end);
        this.end -= this.start;
        this.start = 0;
      }
    }
    if (this.buf.length - this.end >= MIN_READ_BYTES) return this.buf.subarray(this.end);
    // Views handed out keep the old buffer alive; unread bytes move to the new one.
    const unread = this.end - this.start;
    if (unread > this.opts.maxHeadBytes) {
      throw networkError("the response head or a chunk size line is too long");
    }
    let size = this.opts.readBufferBytes;
    while (size < unread + MIN_READ_BYTES) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(this.start, this.end));
    this.buf = next;
    this.start = 0;
    this.end = unread;
    this.lent = false;
    return next.subarray(unread);
  }

  /** Reads more into the buffer; false at the end of the stream. */
  async fill(): Promise<boolean> {
    let n: number | null;
    if (this.pending) {
      const pending = this.pending;
      this.pending = null;
      n = await pending;
    } else {
      n = await this.conn.read(this.room());
    }
    if (n === null) return false;
    this.end += n;
    return true;
  }

  async write(bytes: Uint8Array): Promise<void> {
    for (let at = 0; at < bytes.length;) at += await this.conn.write(bytes.subarray(at));
  }

  /** Parks the socket in the pool: its read notices the server closing it. */
  park(onDead: () => void): void {
    this.idle = true;
    const read = this.conn.read(this.room());
    this.pending = read;
    const settled = () => {
      if (this.idle) onDead();
    };
    read.then(settled, settled);
    this.conn.unref();
    this.idleTimer = setTimeout(onDead, this.keepAliveMs);
    Deno.unrefTimer(this.idleTimer);
  }

  unpark(): void {
    this.idle = false;
    clearTimeout(this.idleTimer);
    this.conn.ref();
  }

  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    this.idle = false;
    clearTimeout(this.idleTimer);
    try {
      this.conn.close();
    } catch {
      // Already closed by the runtime.
    }
    this.onClose(this);
  }
}

/** The parsed head of a response. */
interface Head {
  status: number;
  statusText: string;
  /** Name and value of every header line; a `Headers` is built only when asked for. */
  fields: [string, string][];
  keepAlive: boolean;
  /** -1: chunked; -2: until the socket closes; else the content length. */
  length: number;
  keepAliveMs: number | null;
}

/** Thrown when a pooled socket turned out dead before any byte of an answer. */
class StaleConnection extends Error {}

function findHeadEnd(buf: Uint8Array, from: number, to: number): number {
  for (let i = buf.indexOf(13, from); i >= 0 && i + 3 < to; i = buf.indexOf(13, i + 1)) {
    if (buf[i + 1] === 10 && buf[i + 2] === 13 && buf[i + 3] === 10) return i;
  }
  return -1;
}

async function readHead(c: Connection, method: string): Promise<Head> {
  let sawBytes = false;
  for (;;) {
    let at: number;
    while ((at = findHeadEnd(c.buf, c.start, c.end)) < 0) {
      let more: boolean;
      try {
        more = await c.fill();
      } catch (err) {
        if (!sawBytes && c.served > 1) throw new StaleConnection("reset", { cause: err });
        throw err;
      }
      if (!more) {
        if (!sawBytes && c.served > 1) throw new StaleConnection("closed");
        throw networkError("the connection closed before the response head was complete");
      }
      sawBytes = true;
    }
    const lines = latin1.decode(c.buf.subarray(c.start, at)).split("\r\n");
    c.start = at + 4;
    const m = /^HTTP\/1\.([01]) (\d{3})(?: (.*))?$/.exec(lines[0]);
    if (!m) throw networkError("the server did not answer with HTTP/1.x");
    const status = Number(m[2]);
    const fields: [string, string][] = [];
    for (let i = 1; i < lines.length; i++) {
      const colon = lines[i].indexOf(":");
      if (colon <= 0) throw networkError("malformed response header");
      fields.push([lines[i].slice(0, colon).trim(), lines[i].slice(colon + 1).trim()]);
    }
    const header = (name: string): string | null => {
      let value: string | null = null;
      for (const [k, v] of fields) {
        if (k.length === name.length && k.toLowerCase() === name) {
          value = value === null ? v : `${value}, ${v}`;
        }
      }
      return value;
    };
    // 1xx heads (103 Early Hints, 100 Continue) precede the real one.
    if (status >= 100 && status < 200 && status !== 101) continue;
    if (status === 101) throw networkError("unexpected protocol switch");
    const connection = (header("connection") ?? "").toLowerCase();
    let keepAlive = m[1] === "1"
      ? !connection.includes("close")
      : connection.includes("keep-alive");
    const te = header("transfer-encoding");
    const cl = header("content-length");
    let length: number;
    if (method === "HEAD" || status === 204 || status === 304) {
      length = 0;
    } else if (te !== null) {
      if (te.toLowerCase().trim() !== "chunked") {
        throw networkError(`unsupported transfer-encoding "${te}"`);
      }
      length = -1;
      // Both headers at once is a smuggling pattern: never reuse such a socket.
      if (cl !== null) keepAlive = false;
    } else if (cl !== null) {
      const values = new Set(cl.split(",").map((v) => v.trim()));
      const [only] = values;
      if (values.size !== 1 || !/^\d{1,15}$/.test(only)) {
        throw networkError("invalid content-length");
      }
      length = Number(only);
    } else {
      length = -2;
      keepAlive = false;
    }
    const encoding = (header("content-encoding") ?? "identity").toLowerCase().trim();
    if (encoding !== "identity" && length !== 0) {
      throw networkError(
        `the server sent a "${encoding}" body although identity was asked for; ` +
          "use UPSTREAM_TRANSPORT=fetch",
      );
    }
    const hint = /timeout=(\d+)/i.exec(header("keep-alive") ?? "");
    return {
      status,
      statusText: m[3] ?? "",
      fields,
      keepAlive,
      length,
      keepAliveMs: hint ? Math.max(0, Number(hint[1]) * 1000 - 1000) : null,
    };
  }
}

/** What {@linkcode SocketBody} parsing says when it needs more bytes. */
const MORE = Symbol("more");

/** Where the line starting at `from` ends (its LF), or -1; a line longer than 4 KiB is an error. */
function lineEnd(buf: Uint8Array, from: number, to: number): number {
  for (let i = from; i < to; i++) if (buf[i] === 10) return i;
  if (to - from > 4096) throw networkError("a chunk size or trailer line is too long");
  return -1;
}

const enum State {
  Size,
  Data,
  DataEnd,
  Trailer,
  UntilClose,
  Done,
}

/** A response body read straight off its socket. */
class SocketBody implements BodySource {
  #state: State;
  #remaining = 0;
  #settled = false;
  #reading = false;

  constructor(
    readonly c: Connection,
    readonly head: Head,
    readonly signal: AbortSignal | undefined,
    readonly onAbort: () => void,
    readonly release: (c: Connection, keepAlive: boolean) => void,
  ) {
    if (head.length === -1) this.#state = State.Size;
    else if (head.length === -2) this.#state = State.UntilClose;
    else {
      this.#remaining = head.length;
      this.#state = head.length > 0 ? State.Data : State.Done;
    }
    if (this.#state === State.Done) this.#finish(true);
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return iterate(this);
  }

  async read(): Promise<Uint8Array | null> {
    if (this.#reading) throw new TypeError("one read at a time");
    this.#reading = true;
    const c = this.c;
    try {
      // One async frame per read: the parsing in between is synchronous.
      for (;;) {
        const got = this.#step();
        if (got !== MORE) return got;
        // Connection.fill() inlined: one promise less per network chunk.
        let n: number | null;
        if (c.pending) {
          const pending = c.pending;
          c.pending = null;
          n = await pending;
        } else n = await c.conn.read(c.room());
        if (n !== null) c.end += n;
        else {
          if (this.#state !== State.UntilClose) {
            throw networkError("the connection closed before the response body was complete");
          }
          this.#state = State.Done;
          this.#finish(false);
          return null;
        }
      }
    } catch (err) {
      this.#finish(false);
      if (this.signal?.aborted) throw this.signal.reason;
      if (err instanceof TypeError) throw err;
      throw networkError("the connection failed while reading the response body", err);
    } finally {
      this.#reading = false;
    }
  }

  /** Parses what is buffered: a chunk of the body, the end (null), or {@linkcode MORE}. */
  #step(): Uint8Array | null | typeof MORE {
    const c = this.c;
    const buf = c.buf;
    for (;;) {
      switch (this.#state) {
        case State.Data: {
          if (c.start === c.end) return MORE;
          const n = Math.min(this.#remaining, c.end - c.start);
          const chunk = buf.subarray(c.start, c.start + n);
          c.start += n;
          c.lent = true;
          this.#remaining -= n;
          if (this.#remaining === 0) {
            if (this.head.length === -1) this.#state = State.DataEnd;
            else {
              this.#state = State.Done;
              this.#finish(true);
            }
          }
          return chunk;
        }
        case State.DataEnd: {
          if (c.end - c.start < 2) return MORE;
          if (buf[c.start] !== 13 || buf[c.start + 1] !== 10) {
            throw networkError("malformed chunk end");
          }
          c.start += 2;
          this.#state = State.Size;
          continue;
        }
        case State.Size: {
          const lf = lineEnd(buf, c.start, c.end);
          if (lf < 0) return MORE;
          // Hex digits, then nothing, a CR, or `;` and extensions.
          let size = 0;
          let i = c.start;
          for (; i < lf; i++) {
            const b = buf[i];
            const v = b >= 48 && b <= 57
              ? b - 48
              : b >= 97 && b <= 102
              ? b - 87
              : b >= 65 && b <= 70
              ? b - 55
              : -1;
            if (v < 0) break;
            size = size * 16 + v;
          }
          const digits = i - c.start;
          if (digits === 0 || digits > 12 || (i < lf && buf[i] !== 13 && buf[i] !== 59)) {
            throw networkError("malformed chunk size");
          }
          c.start = lf + 1;
          this.#remaining = size;
          this.#state = size === 0 ? State.Trailer : State.Data;
          continue;
        }
        case State.Trailer: {
          const lf = lineEnd(buf, c.start, c.end);
          if (lf < 0) return MORE;
          const empty = lf === c.start || (lf === c.start + 1 && buf[c.start] === 13);
          c.start = lf + 1;
          if (empty) {
            this.#state = State.Done;
            this.#finish(true);
          }
          continue;
        }
        case State.UntilClose: {
          if (c.start === c.end) return MORE;
          const chunk = buf.subarray(c.start, c.end);
          c.start = c.end;
          c.lent = true;
          return chunk;
        }
        case State.Done:
          return null;
      }
    }
  }

  cancel(): void {
    if (this.#settled) return;
    if (this.signal?.aborted || this.#reading || this.#state === State.UntilClose) {
      return this.#finish(false);
    }
    // The rest of an answer (the last chunk, `[DONE]`, the terminating
    // chunk) is usually already on its way: read it to keep the socket.
    const timer = setTimeout(() => this.#finish(false), DRAIN_MAX_MS);
    Deno.unrefTimer(timer);
    (async () => {
      let bytes = 0;
      try {
        for (let chunk = await this.read(); chunk !== null; chunk = await this.read()) {
          bytes += chunk.length;
          if (bytes > DRAIN_MAX_BYTES) return this.#finish(false);
        }
      } catch {
        // read() already closed the socket.
      } finally {
        clearTimeout(timer);
      }
    })();
  }

  #finish(reusable: boolean): void {
    if (this.#settled) return;
    this.#settled = true;
    this.signal?.removeEventListener("abort", this.onAbort);
    const clean = reusable && this.head.keepAlive && this.c.start === this.c.end;
    if (clean && this.head.keepAliveMs !== null) this.c.keepAliveMs = this.head.keepAliveMs;
    this.release(this.c, clean);
  }
}

/**
 * The socket transport. One instance owns its pool; {@linkcode close} ends
 * every socket it opened.
 *
 * @example
 * ```ts
 * import { SocketTransport } from "./transport_socket.ts";
 * export async function ask(url: string, caPem: string) {
 *   const t = new SocketTransport({ caCerts: [caPem] });
 *   const res = await t.request(url, {
 *     method: "POST",
 *     headers: { "content-type": "application/json" },
 *     body: JSON.stringify({ stream: true }),
 *   });
 *   for await (const chunk of res.body) console.log(chunk.length);
 *   t.close();
 * }
 * ```
 */
export class SocketTransport implements HttpTransport {
  readonly kind = "socket";
  readonly #opts: Required<Omit<SocketTransportOptions, "caCerts">>;
  readonly #caCerts: string[] | undefined;
  readonly #idle = new Map<string, Connection[]>();
  readonly #open = new Set<Connection>();
  #closed = false;
  /** Sockets opened so far (for tests and the bench). */
  connects = 0;

  constructor(opts: SocketTransportOptions = {}) {
    this.#caCerts = opts.caCerts;
    this.#opts = {
      maxIdlePerOrigin: opts.maxIdlePerOrigin ?? 128,
      idleTimeoutMs: opts.idleTimeoutMs ?? 60_000,
      readBufferBytes: Math.max(MIN_READ_BYTES * 2, opts.readBufferBytes ?? 4096),
      maxHeadBytes: opts.maxHeadBytes ?? 64 * 1024,
    };
  }

  /** Open sockets, and how many of them sit idle in the pool. */
  stats(): { open: number; idle: number; connects: number } {
    let idle = 0;
    for (const list of this.#idle.values()) idle += list.length;
    return { open: this.#open.size, idle, connects: this.connects };
  }

  async request(url: string | URL, init: TransportRequest = {}): Promise<TransportResponse> {
    if (this.#closed) throw networkError("the transport is closed");
    const u = typeof url === "string" ? new URL(url) : url;
    if (u.protocol !== "http:" && u.protocol !== "https:") {
      throw networkError(`unsupported protocol ${u.protocol}`);
    }
    const tls = u.protocol === "https:";
    const origin: Origin = {
      key: `${u.protocol}//${u.host}`,
      hostname: u.hostname.startsWith("[") ? u.hostname.slice(1, -1) : u.hostname,
      port: u.port ? Number(u.port) : tls ? 443 : 80,
      tls,
    };
    const method = (init.method ?? "GET").toUpperCase();
    if (!TOKEN.test(method)) throw new TypeError(`invalid method ${method}`);
    const payload = serialise(u, method, init.headers, init.body);
    const signal = init.signal;
    signal?.throwIfAborted();

    for (let attempt = 0;; attempt++) {
      // A retry after a stale pooled socket always takes a fresh one.
      const c = (attempt === 0 ? this.#fromPool(origin.key) : undefined) ??
        await this.#connect(origin, signal);
      c.served++;
      const onAbort = () => c.destroy();
      signal?.addEventListener("abort", onAbort, { once: true });
      try {
        try {
          await c.write(payload);
        } catch (err) {
          if (c.served > 1) throw new StaleConnection("write failed", { cause: err });
          throw err;
        }
        const head = await readHead(c, method);
        const body = new SocketBody(c, head, signal, onAbort, (conn, keep) => {
          if (keep) this.#toPool(conn);
          else conn.destroy();
        });
        let headers: Headers | undefined;
        return {
          status: head.status,
          statusText: head.statusText,
          get headers() {
            return headers ??= new Headers(head.fields);
          },
          body,
          text: () => readText(body),
        };
      } catch (err) {
        signal?.removeEventListener("abort", onAbort);
        c.destroy();
        if (signal?.aborted) throw signal.reason;
        if (err instanceof StaleConnection && attempt === 0) continue;
        if (err instanceof TypeError) throw err;
        throw networkError(`request to ${origin.key} failed`, err);
      }
    }
  }

  close(): void {
    this.#closed = true;
    for (const c of [...this.#open]) c.destroy();
    this.#idle.clear();
  }

  async #connect(origin: Origin, signal: AbortSignal | undefined): Promise<Connection> {
    let conn: Deno.Conn | undefined;
    // An abort during the TLS handshake closes the socket, which ends the handshake.
    const onAbort = () => closeQuietly(conn);
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      // The signal is not handed to Deno.connect: a pooled socket must outlive
      // the request that opened it.
      conn = await abortable<Deno.Conn>(
        origin.tls
          ? Deno.connectTls({
            hostname: origin.hostname,
            port: origin.port,
            caCerts: this.#caCerts,
            alpnProtocols: ["http/1.1"],
          })
          : Deno.connect({ hostname: origin.hostname, port: origin.port }),
        signal,
      );
      if (origin.tls) await (conn as Deno.TlsConn).handshake();
    } catch (err) {
      closeQuietly(conn);
      if (signal?.aborted) throw signal.reason;
      throw networkError(`could not connect to ${origin.key}`, err);
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
    if (this.#closed) {
      conn.close();
      throw networkError("the transport is closed");
    }
    this.connects++;
    const c = new Connection(conn, origin, this.#opts, (dead) => {
      this.#open.delete(dead);
      const list = this.#idle.get(dead.origin.key);
      const i = list ? list.indexOf(dead) : -1;
      if (i >= 0) list!.splice(i, 1);
    });
    this.#open.add(c);
    return c;
  }

  #fromPool(key: string): Connection | undefined {
    const list = this.#idle.get(key);
    const c = list?.pop();
    c?.unpark();
    return c;
  }

  #toPool(c: Connection): void {
    if (this.#closed || c.closed) return c.destroy();
    let list = this.#idle.get(c.origin.key);
    if (!list) this.#idle.set(c.origin.key, list = []);
    if (list.length >= this.#opts.maxIdlePerOrigin || c.keepAliveMs === 0) return c.destroy();
    list.push(c);
    c.park(() => c.destroy());
  }
}

/** Settles like `promise`, or rejects with the signal's reason first; a late connection is closed. */
function abortable<T extends Deno.Conn>(promise: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return promise;
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then((conn) => {
      signal.removeEventListener("abort", onAbort);
      if (signal.aborted) conn.close();
      else resolve(conn);
    }, (err) => {
      signal.removeEventListener("abort", onAbort);
      reject(err);
    });
  });
}

function closeQuietly(conn: Deno.Conn | undefined): void {
  try {
    conn?.close();
  } catch {
    // Already closed.
  }
}

/** The request line, headers and body as one write. */
function serialise(
  u: URL,
  method: string,
  init: HeadersInit | undefined,
  body: string | Uint8Array | undefined,
): Uint8Array {
  const bytes = typeof body === "string" ? encoder.encode(body) : body;
  let head = `${method} ${u.pathname}${u.search} HTTP/1.1\r\nhost: ${u.host}\r\n`;
  let acceptEncoding = false;
  const headers = init instanceof Headers
    ? init
    : Array.isArray(init)
    ? init
    : Object.entries(init ?? {});
  for (const [name, value] of headers) {
    const lower = name.toLowerCase();
    if (!TOKEN.test(name) || BAD_VALUE.test(value)) {
      throw new TypeError(`invalid header ${JSON.stringify(name)}`);
    }
    // Framing is ours to set.
    if (lower === "host" || lower === "content-length" || lower === "transfer-encoding") continue;
    if (lower === "connection") continue;
    if (lower === "accept-encoding") acceptEncoding = true;
    head += `${name}: ${value}\r\n`;
  }
  if (!acceptEncoding) head += "accept-encoding: identity\r\n";
  if (bytes !== undefined || method === "POST" || method === "PUT" || method === "PATCH") {
    head += `content-length: ${bytes?.length ?? 0}\r\n`;
  }
  head += "\r\n";
  const headBytes = encoder.encode(head);
  if (!bytes || bytes.length === 0) return headBytes;
  const out = new Uint8Array(headBytes.length + bytes.length);
  out.set(headBytes);
  out.set(bytes, headBytes.length);
  return out;
}
