/**
 * Opening and closing many WebSocket clients at once, with a bounded number
 * of handshakes in flight and a deadline on every one of them.
 *
 * @module
 */

/** Options for {@linkcode openSockets}. */
export interface OpenOptions {
  /** Handshakes in flight at once. */
  concurrency?: number;
  /** Also wait for the server's first frame (the gateway's `connected`). */
  firstFrame?: boolean;
  /** Per socket. */
  timeoutMs?: number;
}

/** Opens one socket; resolves once it is open (and has its first frame, if asked). */
export function openSocket(url: string, opts: OpenOptions = {}): Promise<WebSocket> {
  const timeoutMs = opts.timeoutMs ?? 15_000;
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const timer = setTimeout(() => {
      cleanup();
      try {
        ws.close();
      } catch {
        // Not open yet.
      }
      reject(new Error(`${url}: not ready after ${timeoutMs} ms`));
    }, timeoutMs);
    const done = () => {
      cleanup();
      resolve(ws);
    };
    const fail = (e: Event) => {
      cleanup();
      reject(new Error(`${url}: ${e instanceof ErrorEvent ? e.message : e.type}`));
    };
    const onOpen = () => {
      if (!opts.firstFrame) done();
    };
    const cleanup = () => {
      clearTimeout(timer);
      ws.removeEventListener("open", onOpen);
      ws.removeEventListener("message", done);
      ws.removeEventListener("error", fail);
      ws.removeEventListener("close", fail);
    };
    ws.addEventListener("open", onOpen);
    if (opts.firstFrame) ws.addEventListener("message", done);
    ws.addEventListener("error", fail);
    ws.addEventListener("close", fail);
  });
}

/**
 * Opens `count` sockets, `url(i)` for the i-th. Fails (after closing what it
 * opened) if any socket cannot be opened: a partial population would skew a
 * per-socket figure.
 */
export async function openSockets(
  count: number,
  url: (i: number) => string,
  opts: OpenOptions = {},
): Promise<WebSocket[]> {
  const sockets: WebSocket[] = new Array(count);
  const concurrency = Math.max(1, opts.concurrency ?? 100);
  let next = 0;
  let failure: Error | null = null;
  const worker = async () => {
    while (next < count && !failure) {
      const i = next++;
      try {
        sockets[i] = await openSocket(url(i), opts);
      } catch (err) {
        failure ??= err as Error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  if (failure) {
    await closeSockets(sockets.filter((s) => s !== undefined));
    throw new Error(`opened ${sockets.filter(Boolean).length} of ${count} sockets: ${failure}`);
  }
  return sockets;
}

/** Closes sockets and waits (at most `timeoutMs`) until they are closed. */
export async function closeSockets(sockets: WebSocket[], timeoutMs = 10_000): Promise<void> {
  const closed = sockets.map((ws) =>
    ws.readyState === WebSocket.CLOSED ? Promise.resolve() : new Promise<void>((resolve) => {
      ws.addEventListener("close", () => resolve(), { once: true });
      try {
        ws.close(1000);
      } catch {
        resolve();
      }
    })
  );
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    Promise.all(closed),
    new Promise((resolve) => timer = setTimeout(resolve, timeoutMs)),
  ]);
  clearTimeout(timer);
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
