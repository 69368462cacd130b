/**
 * A TCP proxy on loopback whose connections a test can cut abruptly: the
 * closest thing to a network drop (no close frame, no FIN handshake in time)
 * without leaving the machine.
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
  const live = new Set<{ a: Deno.Conn; b: Deno.Conn }>();
  const pipes: Promise<unknown>[] = [];
  const accepting = (async () => {
    for await (const a of listener) {
      let b: Deno.Conn;
      try {
        b = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
      } catch {
        a.close();
        continue;
      }
      const pair = { a, b };
      live.add(pair);
      const cut = () => {
        if (!live.delete(pair)) return;
        for (const c of [a, b]) {
          try {
            c.close();
          } catch {
            // Already closed.
          }
        }
      };
      pipes.push(a.readable.pipeTo(b.writable).catch(() => {}).finally(cut));
      pipes.push(b.readable.pipeTo(a.writable).catch(() => {}).finally(cut));
    }
  })().catch(() => {});
  const cutAll = () => {
    for (const pair of [...live]) {
      live.delete(pair);
      for (const c of [pair.a, pair.b]) {
        try {
          c.close();
        } catch {
          // Already closed.
        }
      }
    }
  };
  return {
    port: (listener.addr as Deno.NetAddr).port,
    get connections() {
      return live.size;
    },
    cutAll,
    async close() {
      cutAll();
      listener.close();
      await accepting;
      await Promise.allSettled(pipes);
    },
  };
}
