/**
 * A TCP proxy on loopback that a test can use as a bad network: cut every
 * connection abruptly (no close frame), swallow traffic while keeping
 * connections open (a dead peer that TCP cannot see), refuse new
 * connections (offline), or pass everything on late (a slow link) — without
 * leaving the machine.
 *
 * @module
 */

/** A running proxy. */
export interface TcpProxy {
  port: number;
  /** Number of live client connections. */
  readonly connections: number;
  /** Cuts every live connection at once, both directions. */
  cutAll(): void;
  /** While true, bytes in both directions are dropped but connections stay open. */
  blackhole: boolean;
  /** While true, new connections are closed as soon as they arrive. */
  refuse: boolean;
  /**
   * While true, nothing is read from the server side: a client that stops
   * reading. TCP buffers fill and the server's send queue grows.
   */
  stopReading: boolean;
  /** Every chunk waits this long before it is passed on, both directions (a slow network). */
  delayMs: number;
  close(): Promise<void>;
}

/**
 * Starts a proxy to `127.0.0.1:targetPort`.
 *
 * @example
 * ```ts
 * const proxy = startTcpProxy(8000);
 * // connect to ws://127.0.0.1:${proxy.port}, then:
 * proxy.cutAll();
 * ```
 */
export function startTcpProxy(targetPort: number): TcpProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const live = new Set<Deno.Conn[]>();
  const pumps: Promise<void>[] = [];

  const cut = (pair: Deno.Conn[]) => {
    if (!live.delete(pair)) return;
    for (const c of pair) {
      try {
        c.close();
      } catch {
        // Already closed.
      }
    }
  };

  const proxy: TcpProxy = {
    port: (listener.addr as Deno.NetAddr).port,
    blackhole: false,
    refuse: false,
    stopReading: false,
    delayMs: 0,
    get connections() {
      return live.size;
    },
    cutAll() {
      for (const pair of [...live]) cut(pair);
    },
    async close() {
      proxy.cutAll();
      listener.close();
      await accepting;
      await Promise.allSettled(pumps);
    },
  };

  async function pump(
    from: Deno.Conn,
    to: Deno.Conn,
    pair: Deno.Conn[],
    downstream: boolean,
  ): Promise<void> {
    const buf = new Uint8Array(64 * 1024);
    const late: { at: number; bytes: Uint8Array }[] = [];
    let writing: Promise<void> = Promise.resolve();
    try {
      for (;;) {
        while (downstream && proxy.stopReading && live.has(pair)) {
          await new Promise((r) => setTimeout(r, 5));
        }
        const n = await from.read(buf);
        if (n === null) break;
        if (proxy.blackhole) continue;
        if (proxy.delayMs > 0) {
          // Latency, not a slower pipe: each chunk leaves `delayMs` after it came, in order.
          late.push({ at: performance.now() + proxy.delayMs, bytes: buf.slice(0, n) });
          if (late.length === 1) writing = writeLate(to, late).catch(() => cut(pair));
          continue;
        }
        await writing;
        let off = 0;
        while (off < n) off += await to.write(buf.subarray(off, n));
      }
    } catch {
      // Either side went away.
    } finally {
      await writing.catch(() => {});
      cut(pair);
    }
  }

  /** Writes the chunks in `late` to `to`, each once its time has come, until none is left. */
  async function writeLate(to: Deno.Conn, late: { at: number; bytes: Uint8Array }[]) {
    while (late.length > 0) {
      const wait = late[0].at - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const { bytes } = late[0];
      let off = 0;
      while (off < bytes.length) off += await to.write(bytes.subarray(off));
      late.shift();
    }
  }

  const accepting = (async () => {
    for await (const a of listener) {
      if (proxy.refuse) {
        a.close();
        continue;
      }
      let b: Deno.Conn;
      try {
        b = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
      } catch {
        a.close();
        continue;
      }
      const pair = [a, b];
      live.add(pair);
      pumps.push(pump(a, b, pair, false), pump(b, a, pair, true));
    }
  })().catch(() => {});

  return proxy;
}
