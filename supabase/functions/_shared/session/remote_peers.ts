/**
 * The holder's side of sockets on other processes. A session is held (its
 * turns run, its seq is counted) by one process; a socket attached to it on
 * another process is a remote peer here. That process relays: it tells the
 * holder which of its sockets watch (`watch`), forwards their client frames
 * (`client`), and gets the session's frames once they are durable (`frames`,
 * published here after each write). A relay that stops saying `watch` is
 * taken to be gone after {@linkcode REMOTE_PEER_TTL_MS}.
 *
 * @module
 */
import type { Logger } from "../platform/log.ts";
import { type Bus, type BusMessage, orderedPublisher } from "../store/bus.ts";
import type { SessionRegistry } from "./registry.ts";
import type { Peer, Session } from "./session.ts";

/** A relay re-sends `watch` this often; the holder's answer tells it the holder is alive. */
export const RELAY_REFRESH_MS = 2000;

/** A remote peer whose relay has not said `watch` for this long is dropped. */
export const REMOTE_PEER_TTL_MS = 5 * RELAY_REFRESH_MS;

/** Frames per `frames` message (a bigger batch is split; each one may go by reference). */
const FRAMES_PER_MESSAGE = 200;

/** Sessions let go of whose acknowledgements are kept, for a relay that asks late. */
const LET_GO_KEPT = 1000;

/** What the holder's side needs. */
export interface RemotePeersDeps {
  log: Logger;
  bus: Bus;
  sessions: SessionRegistry;
  /** This process's id on the bus. */
  instance: string;
  /**
   * A remote socket was attached: the runtime greets a fresh one, takes over
   * the others of a plain session. Returns the seq after which the socket's
   * frames begin.
   */
  joined(session: Session, peer: Peer, fresh: boolean): number;
  /** A remote socket was detached (its relay let it go, or went silent). */
  left(session: Session, peer: Peer): void;
  /**
   * A client frame that arrived on a remote socket; `retry`: its relay sent
   * it again because this process may have missed it.
   */
  received(session: Session, peer: Peer, data: string, retry: boolean): void;
}

/** See {@linkcode createRemotePeers}. */
export interface RemotePeers {
  onBus(msg: BusMessage): void;
  /** Publishes durable frames to the processes relaying their sessions. */
  committed(frames: { session: string; seq: number; json: string }[]): void;
  /**
   * This process lets go of a session: returns, per relaying process, the
   * last client frame it handled (for `released`; a `watch` that comes late
   * is answered with it too). Frames that come later are not handled here.
   */
  letGo(sessionId: string): Record<string, number>;
  /** Drops the remote peers whose relay went silent. */
  prune(): void;
}

/**
 * @example
 * ```ts ignore
 * const remote = createRemotePeers({ log, bus, sessions, instance, joined, received });
 * store.onCommitted = (frames) => remote.committed(frames);
 * bus.subscribe((msg) => remote.onBus(msg));
 * ```
 */
export function createRemotePeers(deps: RemotePeersDeps): RemotePeers {
  const { log, bus, sessions, instance } = deps;
  /** When each relay last said `watch`, per session and process. */
  const seen = new Map<string, Map<string, number>>();
  /** The last client frame handled, per held session and relaying process. */
  const took = new Map<string, Map<string, number>>();
  /** The same for sessions let go of (oldest first, at most {@linkcode LET_GO_KEPT}). */
  const tookBefore = new Map<string, Record<string, number>>();
  /** In order per session: a later batch of frames never overtakes an earlier one. */
  const publish = orderedPublisher(
    bus,
    (err, msg) => log.warn("relay_publish_failed", { session: msg.session, err: String(err) }),
  );

  function remotePeer(session: Session, id: string, from: string): Peer {
    return {
      id,
      ws: null,
      instance: from,
      sentUpTo: session.seq,
      close(code, reason, say) {
        publish({
          kind: "close",
          session: session.id,
          from: instance,
          to: from,
          socket: id,
          code,
          reason,
          ...(say ? { say } : {}),
        });
      },
    };
  }

  function watch(msg: Extract<BusMessage, { kind: "watch" }>): void {
    const session = sessions.get(msg.session);
    if (!session || session.closed) {
      // Said at once, so the relay need not wait to find out it must look elsewhere.
      const before = tookBefore.get(msg.session);
      // Let go of here: nothing of this relay's handled is nothing handled, not unknown.
      const last = before ? before[msg.from] ?? 0 : undefined;
      return void publish({
        kind: "watching",
        session: msg.session,
        from: instance,
        to: msg.from,
        starts: {},
        gone: true,
        ...(last !== undefined ? { took: last } : {}),
      });
    }
    let bySender = seen.get(session.id);
    if (!bySender) seen.set(session.id, bySender = new Map());
    if (msg.sockets.length === 0) bySender.delete(msg.from);
    else bySender.set(msg.from, Date.now());
    const wanted = new Set(msg.sockets);
    for (const peer of [...session.peers.values()]) {
      if (peer.instance !== msg.from || wanted.has(peer.id)) continue;
      session.detach(peer.id);
      deps.left(session, peer);
    }
    const fresh = new Set(msg.fresh);
    const starts: Record<string, number> = {};
    for (const id of msg.sockets) {
      const known = session.peers.get(id);
      if (known) {
        // A `watch` said again (the first answer may have been lost): the same answer.
        if (known.startsAt !== undefined) starts[id] = known.startsAt;
        continue;
      }
      const peer = remotePeer(session, id, msg.from);
      starts[id] = peer.startsAt = deps.joined(session, peer, fresh.has(id));
    }
    // The answer is also the relay's sign that the holder lives.
    const last = took.get(session.id)?.get(msg.from);
    publish({
      kind: "watching",
      session: session.id,
      from: instance,
      to: msg.from,
      starts,
      ...(last !== undefined ? { took: last } : {}),
    });
  }

  function client(msg: Extract<BusMessage, { kind: "client" }>): void {
    const session = sessions.get(msg.session);
    // Let go of meanwhile: the relay learns from `took` that this one was not handled.
    if (!session || session.closed) return;
    if (msg.n !== undefined) {
      let byRelay = took.get(session.id);
      if (!byRelay) took.set(session.id, byRelay = new Map());
      // Said twice (sent again after a publish that failed but got through): handled once.
      if (msg.n <= (byRelay.get(msg.from) ?? 0)) return;
      byRelay.set(msg.from, msg.n);
    }
    const peer = session.peers.get(msg.socket);
    // A socket detached meanwhile has nobody left to answer.
    if (peer?.instance === msg.from) deps.received(session, peer, msg.data, msg.retry === true);
  }

  return {
    onBus(msg) {
      if (msg.from === instance) return;
      if (msg.kind === "watch" && msg.to === instance) watch(msg);
      else if (msg.kind === "client" && msg.to === instance) client(msg);
    },

    letGo(sessionId) {
      const last = Object.fromEntries(took.get(sessionId) ?? []);
      took.delete(sessionId);
      tookBefore.delete(sessionId);
      tookBefore.set(sessionId, last);
      if (tookBefore.size > LET_GO_KEPT) tookBefore.delete(tookBefore.keys().next().value!);
      return last;
    },

    committed(frames) {
      const bySession = new Map<string, { seq: number; json: string }[]>();
      for (const f of frames) {
        let list = bySession.get(f.session);
        if (!list) {
          const session = sessions.get(f.session);
          if (!session?.hasRemotePeers()) continue;
          bySession.set(f.session, list = []);
        }
        list.push({ seq: f.seq, json: f.json });
      }
      for (const [id, list] of bySession) {
        for (let i = 0; i < list.length; i += FRAMES_PER_MESSAGE) {
          publish({
            kind: "frames",
            session: id,
            from: instance,
            frames: list.slice(i, i + FRAMES_PER_MESSAGE),
          });
        }
      }
    },

    prune() {
      const now = Date.now();
      for (const id of took.keys()) if (!sessions.get(id)) took.delete(id);
      for (const [id, bySender] of seen) {
        const session = sessions.get(id);
        if (!session || session.closed) {
          seen.delete(id);
          continue;
        }
        for (const [from, at] of bySender) {
          if (now - at <= REMOTE_PEER_TTL_MS) continue;
          bySender.delete(from);
          log.info("relay_gone", { session: id, instance: from });
          for (const peer of [...session.peers.values()]) {
            if (peer.instance !== from) continue;
            session.detach(peer.id);
            deps.left(session, peer);
          }
        }
        if (bySender.size === 0) seen.delete(id);
      }
    },
  };
}
