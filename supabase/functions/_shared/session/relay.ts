/**
 * Sockets here, session elsewhere. When a socket joins (or resumes) a session
 * that another live process holds — the other tab of a conversation, or a
 * reconnect that landed on a different isolate mid-answer — this process does
 * not take the session over: it relays. The holder keeps running the answer;
 * its frames arrive here through the bus once durable and go to the socket in
 * seq order, each exactly once (a hole, e.g. a NOTIFY lost while the listen
 * connection was reset, is filled from the store); the socket's own frames go
 * to the holder, each kept here until the holder acknowledges it. When the
 * holder lets go (it drained, or handed an idle session to where its sockets
 * are) or stops answering, the session is adopted here, the frames it did
 * not handle are handled here, and the sockets carry on without noticing.
 *
 * @module
 */
import type { Logger } from "../platform/log.ts";
import { type Bus, type BusMessage, orderedPublisher } from "../store/bus.ts";
import type { SessionRecord, SessionStore } from "../store/store.ts";
import { CLOSE } from "../protocol/codes.ts";
import { closeQuietly, sendSocketFrame } from "./socket.ts";
import { RELAY_REFRESH_MS } from "./remote_peers.ts";

/** How long a joining socket waits for the holder to answer before it is taken for gone. */
export const HOLDER_ANSWER_MS = 2000;

/** A holder that has not answered `watch` for this long is taken for gone. */
const HOLDER_SILENT_MS = 3 * RELAY_REFRESH_MS;

/** Every this many client frames not yet acknowledged, the relay asks the holder (`watch`). */
const ACK_EVERY = 32;

/**
 * Client frames (count, bytes) a session's relay keeps for a holder that
 * has not acknowledged them; past either, a socket's next frame closes it
 * (1013): the holder is not keeping up, and memory stays bounded.
 */
const UNACKED_MAX = 512;
const UNACKED_MAX_BYTES = 8 << 20;

/** One socket of this process attached to a session held elsewhere. */
export interface RelaySocket {
  readonly id: string;
  readonly ws: WebSocket;
  /** The highest seq sent to the socket. */
  lastSent: number;
  /** While true, the socket's frames are being read from the store. */
  catchingUp: boolean;
}

/** A client frame on its way to a holder. */
interface Forwarded {
  /** Rises with every frame this process forwards (any session); `took` acks up to one. */
  n: number;
  socket: string;
  data: string;
  /** It may have been handled already (a holder went silent before acknowledging it). */
  retry: boolean;
}

/** A session held by another process, with the sockets of this one attached to it. */
interface Relayed {
  readonly id: string;
  holder: string;
  readonly owner: string | null;
  readonly conversation: string | null;
  readonly sockets: Map<string, RelaySocket>;
  /** The highest seq the holder has published. */
  latest: number;
  heardAt: number;
  /** Sockets still to be greeted by the holder (joined without a resume). */
  fresh: Set<string>;
  /** Answers awaited for `watch`: where fresh sockets start, or "gone" (not held there). */
  waiting: ((answer: Record<string, number> | "gone") => void)[];
  /** Set while the session is being adopted here. */
  adopting: boolean;
  /** Joins in progress: an adoption waits for them, so no socket gets its replay twice. */
  joins: Set<Promise<unknown>>;
  /** Sent to the holder, not yet acknowledged: sent again to whoever holds it next. */
  unacked: Forwarded[];
  unackedBytes: number;
  /** Came while the session was being adopted: for the next holder, after `unacked`. */
  later: Forwarded[];
}

/** What a relay needs. */
export interface RelaysDeps {
  log: Logger;
  bus: Bus;
  store: SessionStore;
  /** This process's id on the bus. */
  instance: string;
  /** Above this many bytes queued on a socket, its client is taken to have stopped reading. */
  sendHardLimitBytes: number;
  /**
   * The holder let go or went silent: take the session here, with these
   * sockets (each to continue after its `lastSent`). Resolves false when
   * another process got it first (the relay then follows the new holder).
   */
  adopt(record: { id: string; holder: string | null }, sockets: RelaySocket[]): Promise<boolean>;
  /**
   * Hands a client frame to its socket's session again, wherever that is now;
   * `retry`: the last holder may have handled it (see {@linkcode Relays.forward}).
   */
  redeliver(socketId: string, data: string, retry: boolean): void;
}

/** How a socket joins: fresh (greeted by the holder) or resuming after a seq. */
export interface RelayJoin {
  id: string;
  ws: WebSocket;
  /** null: a fresh join; else resume after this seq. */
  lastSeq: number | null;
  /** Frames (seq 0) to send first when the socket resumes, before the replay. */
  resumed?: (replayed: number) => Record<string, unknown>;
}

/** See {@linkcode createRelays}. */
export interface Relays {
  /** Sessions relayed here. */
  readonly size: number;
  /**
   * Attaches a socket to a session held by `record.instance`; false when the
   * holder did not answer (the caller adopts the session instead).
   */
  join(record: SessionRecord, socket: RelayJoin): Promise<boolean>;
  /** Whether a socket is relayed here. */
  has(sessionId: string, socketId: string): boolean;
  /**
   * A client frame from a relayed socket, for the holder. It is kept until
   * the holder acknowledges it; if the holder lets go or goes silent first,
   * it goes to the next holder — marked `retry` when nobody can say whether
   * it was handled, so a query already known there is not asked twice.
   */
  forward(sessionId: string, socketId: string, data: string, retry?: boolean): void;
  /** A relayed socket went away. */
  leave(sessionId: string, socketId: string): void;
  onBus(msg: BusMessage): void;
  /** Whether a message sent by reference concerns a session relayed here. */
  wants(sessionId: string): boolean;
  /** Closes every relayed socket (this process is stopping): they reconnect elsewhere. */
  closeAll(say: Record<string, unknown>, code: number, reason: string): void;
  stop(): void;
}

/**
 * @example
 * ```ts ignore
 * const relays = createRelays({ log, bus, store, instance, adopt });
 * if (!(await relays.join(record, { id: socketId, ws, lastSeq: 41 }))) await adoptHere();
 * ```
 */
export function createRelays(deps: RelaysDeps): Relays {
  const { log, bus, store, instance } = deps;
  const relayed = new Map<string, Relayed>();
  let timer: ReturnType<typeof setInterval> | undefined;
  let forwarded = 0;

  /** Client frames go to the holder in the order they came. */
  const publish = orderedPublisher(
    bus,
    (err, msg) => log.warn("relay_publish_failed", { session: msg.session, err: String(err) }),
  );

  function sayWatch(r: Relayed): Promise<void> {
    // Fresh sockets stay fresh until the holder answered for them: a lost `watch` is said again.
    const fresh = [...r.fresh];
    return publish({
      kind: "watch",
      session: r.id,
      from: instance,
      to: r.holder,
      sockets: [...r.sockets.keys()],
      fresh,
    });
  }

  function send(sock: RelaySocket, frames: { seq: number; json: string }[]): boolean {
    for (const f of frames) {
      if (f.seq <= sock.lastSent) continue;
      if (f.seq !== sock.lastSent + 1) return false;
      // A client that stops reading must not grow our memory without bound; it may resume.
      if (sock.ws.bufferedAmount > deps.sendHardLimitBytes) {
        closeQuietly(sock.ws, CLOSE.tryAgainLater, "Client is not reading");
        return true;
      }
      sock.lastSent = f.seq;
      try {
        sock.ws.send(f.json);
      } catch {
        // Closed meanwhile; leave() follows.
      }
    }
    return true;
  }

  /** Reads a socket's frames from the store until it has all the holder published. */
  async function catchUp(r: Relayed, sock: RelaySocket): Promise<void> {
    if (sock.catchingUp) return;
    sock.catchingUp = true;
    try {
      for (let round = 0; round < 20 && sock.lastSent < r.latest; round++) {
        const result = await store.framesAfter(r.id, sock.lastSent);
        if (!result.ok) {
          // Never stored (its holder dropped it) or cleared: the socket skips what is gone.
          log.warn("relay_gap", { session: r.id, socket: sock.id, missing: result.missingSeq });
          sock.lastSent = Math.max(sock.lastSent, result.missingSeq, result.clearedSeq ?? 0);
          continue;
        }
        if (result.frames.length === 0) break;
        send(sock, result.frames);
      }
    } catch (err) {
      log.warn("relay_catch_up_failed", { session: r.id, err: String(err) });
    } finally {
      sock.catchingUp = false;
    }
  }

  function deliver(r: Relayed, frames: { seq: number; json: string }[]): void {
    if (frames.length === 0) return;
    r.latest = Math.max(r.latest, frames[frames.length - 1].seq);
    for (const sock of r.sockets.values()) {
      if (sock.catchingUp) continue;
      if (!send(sock, frames)) catchUp(r, sock);
    }
  }

  /** The holder handled the client frames up to `took`. */
  function ack(r: Relayed, took: number): void {
    while (r.unacked.length > 0 && r.unacked[0].n <= took) {
      r.unackedBytes -= r.unacked.shift()!.data.length;
    }
  }

  /**
   * The holder let go or went silent: the session is taken here (or followed
   * to whoever took it). `sure`: the holder said which client frames it
   * handled (`took`), so the rest go on as new; else each may be a repeat.
   */
  async function handOver(r: Relayed, sure: boolean): Promise<void> {
    if (!sure) { for (const f of r.unacked) f.retry = true; }
    if (r.adopting || r.sockets.size === 0) return;
    r.adopting = true;
    const holder = r.holder;
    try {
      await Promise.allSettled([...r.joins]);
      const sockets = [...r.sockets.values()];
      // Client frames that come meanwhile wait in `later` and follow the adoption.
      const redeliver = () => {
        if (relayed.get(r.id) === r) relayed.delete(r.id);
        const frames = [...r.unacked.splice(0), ...r.later.splice(0)];
        r.unackedBytes = 0;
        for (const f of frames) deps.redeliver(f.socket, f.data, f.retry);
      };
      if (await deps.adopt({ id: r.id, holder }, sockets)) return redeliver();
      // Another process got it first: follow it.
      const rec = await store.load(r.id);
      if (rec?.instance && rec.instance !== instance) {
        if (relayed.get(r.id) === r) relayed.delete(r.id);
        for (const sock of sockets) {
          const followed = await join(rec, { id: sock.id, ws: sock.ws, lastSeq: sock.lastSent });
          if (!followed) closeQuietly(sock.ws, CLOSE.restart, "Server restart");
        }
        return redeliver();
      }
      if (relayed.get(r.id) === r) relayed.delete(r.id);
      for (const sock of sockets) closeQuietly(sock.ws, CLOSE.restart, "Server restart");
    } catch (err) {
      if (relayed.get(r.id) === r) relayed.delete(r.id);
      log.error("relay_adopt_failed", { session: r.id, err: String(err) });
      for (const sock of r.sockets.values()) closeQuietly(sock.ws, CLOSE.restart, "Server restart");
    } finally {
      r.adopting = false;
    }
  }

  function tick(): void {
    const now = Date.now();
    for (const r of relayed.values()) {
      if (now - r.heardAt > HOLDER_SILENT_MS) {
        log.warn("relay_holder_silent", { session: r.id, holder: r.holder });
        handOver(r, false);
      } else sayWatch(r).catch(() => {});
    }
  }

  function startTimer(): void {
    if (timer !== undefined) return;
    timer = setInterval(tick, RELAY_REFRESH_MS);
    // Under plain Deno the relay timer alone must not keep the process alive.
    if (typeof Deno.unrefTimer === "function") Deno.unrefTimer(timer);
  }

  function join(record: SessionRecord, socket: RelayJoin): Promise<boolean> {
    const r = relayed.get(record.id);
    const run = joinOnce(record, socket);
    const held = relayed.get(record.id) ?? r;
    held?.joins.add(run);
    run.finally(() => held?.joins.delete(run));
    return run;
  }

  async function joinOnce(record: SessionRecord, socket: RelayJoin): Promise<boolean> {
    const holder = record.instance!;
    let r = relayed.get(record.id);
    if (r && r.holder !== holder) r = undefined;
    if (!r) {
      r = {
        id: record.id,
        holder,
        owner: record.owner,
        conversation: record.conversation,
        sockets: new Map(),
        latest: record.lastSeq,
        heardAt: Date.now(),
        fresh: new Set(),
        waiting: [],
        adopting: false,
        joins: new Set(),
        unacked: [],
        unackedBytes: 0,
        later: [],
      };
      relayed.set(record.id, r);
      startTimer();
    }
    const sock: RelaySocket = {
      id: socket.id,
      ws: socket.ws,
      lastSent: socket.lastSeq ?? Infinity,
      catchingUp: true,
    };
    r.sockets.set(sock.id, sock);
    if (socket.lastSeq === null) r.fresh.add(sock.id);
    // A NOTIFY can be lost (the listen connection was being reset): `watch` is said
    // again until the holder answers, or until it is taken for gone.
    const answered = new Promise<Record<string, number> | "gone" | null>((resolve) => {
      const again = setInterval(() => sayWatch(r!).catch(() => {}), HOLDER_ANSWER_MS / 4);
      const t = setTimeout(() => {
        clearInterval(again);
        resolve(null);
      }, HOLDER_ANSWER_MS);
      r!.waiting.push((answer) => {
        clearInterval(again);
        clearTimeout(t);
        resolve(answer);
      });
    });
    await sayWatch(r).catch(() => {});
    const answer = await answered;
    const starts = answer === "gone" ? null : answer;
    if (!starts || relayed.get(record.id) !== r || !r.sockets.has(sock.id)) {
      r.sockets.delete(sock.id);
      r.fresh.delete(sock.id);
      if (r.sockets.size === 0 && relayed.get(r.id) === r) relayed.delete(r.id);
      return false;
    }
    r.fresh.delete(sock.id);
    if (socket.lastSeq === null) sock.lastSent = starts[sock.id] ?? r.latest;
    // The frames published before the holder counted this socket are in the store.
    if (socket.resumed) {
      const result = await store.framesAfter(r.id, sock.lastSent).catch(() => null);
      const frames = result?.ok ? result.frames : [];
      sendSocketFrame(sock.ws, socket.resumed(frames.length));
      send(sock, frames);
    }
    sock.catchingUp = false;
    await catchUp(r, sock);
    log.info("relay_joined", { session: r.id, socket: sock.id, holder, last_seq: sock.lastSent });
    return true;
  }

  return {
    get size() {
      return relayed.size;
    },

    join,

    has(sessionId, socketId) {
      return relayed.get(sessionId)?.sockets.has(socketId) ?? false;
    },

    forward(sessionId, socketId, data, retry = false) {
      const r = relayed.get(sessionId);
      const sock = r?.sockets.get(socketId);
      if (!r || !sock) return;
      if (r.unacked.length + r.later.length >= UNACKED_MAX || r.unackedBytes > UNACKED_MAX_BYTES) {
        log.warn("relay_unacked_full", {
          session: r.id,
          holder: r.holder,
          frames: r.unacked.length,
        });
        return closeQuietly(sock.ws, CLOSE.tryAgainLater, "The session's server is not keeping up");
      }
      const f: Forwarded = { n: ++forwarded, socket: socketId, data, retry };
      if (r.adopting) return void r.later.push(f);
      r.unacked.push(f);
      r.unackedBytes += data.length;
      // Acknowledgements ride on `watching`: a busy socket asks for one now and then.
      if (r.unacked.length % ACK_EVERY === 0) sayWatch(r).catch(() => {});
      // A frame the database did not take (it was away) is sent again, in order: a later
      // one acknowledged would otherwise acknowledge it too. Not once it is redelivered.
      publish({
        kind: "client",
        session: sessionId,
        from: instance,
        to: r.holder,
        socket: socketId,
        data,
        n: f.n,
        ...(retry ? { retry } : {}),
      }, () => relayed.get(r.id) === r && r.unacked.includes(f));
    },

    leave(sessionId, socketId) {
      const r = relayed.get(sessionId);
      if (!r || !r.sockets.delete(socketId)) return;
      r.fresh.delete(socketId);
      sayWatch(r).catch(() => {});
      if (r.sockets.size === 0) relayed.delete(sessionId);
      if (relayed.size === 0 && timer !== undefined) {
        clearInterval(timer);
        timer = undefined;
      }
    },

    onBus(msg) {
      if (msg.from === instance) return;
      const r = relayed.get(msg.session);
      if (!r) return;
      if (msg.kind === "frames" && msg.from === r.holder) {
        r.heardAt = Date.now();
        deliver(r, msg.frames);
      } else if (msg.kind === "watching" && msg.to === instance && msg.from === r.holder) {
        if (!msg.gone) r.heardAt = Date.now();
        if (msg.took !== undefined) ack(r, msg.took);
        for (const resolve of r.waiting.splice(0)) resolve(msg.gone ? "gone" : msg.starts);
        // It let go without our hearing it say so: the sockets already relayed are adopted.
        if (msg.gone) handOver(r, msg.took !== undefined);
      } else if (msg.kind === "close" && msg.to === instance) {
        const sock = r.sockets.get(msg.socket);
        if (!sock) return;
        if (msg.say) sendSocketFrame(sock.ws, msg.say);
        closeQuietly(sock.ws, msg.code, msg.reason);
      } else if (msg.kind === "released" && msg.from === r.holder) {
        // The holder let go once durable: whatever it published is in the store. Sockets
        // still joining look again on their own; the joined ones are adopted here.
        if (msg.took) ack(r, msg.took[instance] ?? 0);
        for (const resolve of r.waiting.splice(0)) resolve("gone");
        handOver(r, msg.took !== undefined);
      }
    },

    wants(sessionId) {
      return relayed.has(sessionId);
    },

    closeAll(say, code, reason) {
      for (const r of relayed.values()) {
        for (const sock of r.sockets.values()) {
          sendSocketFrame(sock.ws, say);
          closeQuietly(sock.ws, code, reason);
        }
      }
    },

    stop() {
      if (timer !== undefined) clearInterval(timer);
      timer = undefined;
    },
  };
}
