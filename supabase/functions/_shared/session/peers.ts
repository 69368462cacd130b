/**
 * The sockets of a session as peers: one here (a WebSocket), the rule that a
 * plain session has one socket (the newest takes it over), and `presence`,
 * which tells a conversation how many it has.
 *
 * @module
 */
import { CLOSE } from "../protocol/codes.ts";
import type { Peer, Session } from "./session.ts";
import { closeQuietly, sendSocketFrame, takenOverFrame } from "./socket.ts";

/**
 * A socket attached to a session in this process.
 *
 * @example
 * ```ts ignore
 * const peer = localPeer(ws, "a1b2c3", session.seq);
 * session.attach(peer);
 * ```
 */
export function localPeer(ws: WebSocket, id: string, sentUpTo: number): Peer {
  return {
    id,
    ws,
    instance: null,
    sentUpTo,
    attachedAt: Date.now(),
    close(code, reason, say) {
      if (say) sendSocketFrame(ws, say);
      closeQuietly(ws, code, reason);
    },
  };
}

/**
 * A plain session has one socket: the newest takes it, the others are told
 * (`session_taken_over`) and closed 4002, wherever they are. A conversation
 * keeps them all.
 *
 * @example
 * ```ts ignore
 * keepNewest(session, peer.id);
 * ```
 */
export function keepNewest(session: Session, newest: string): void {
  if (session.conversation !== null) return;
  for (const peer of [...session.peers.values()]) {
    if (peer.id === newest) continue;
    session.detach(peer.id);
    peer.close(CLOSE.takenOver, "Session taken over", takenOverFrame(session.id));
  }
}

/**
 * Tells the whole conversation how many sockets it has now, and which one
 * joined or left (nothing for a plain session).
 *
 * @example
 * ```ts ignore
 * session.attach(peer);
 * presence(session, peer, null); // {event: "presence", sockets: 2, joined: "a1b2c3"}
 * ```
 */
export function presence(session: Session, joined: Peer | null, left: Peer | null): void {
  if (session.conversation === null || session.closed) return;
  const n = session.peers.size;
  session.emit({
    type: "notification",
    event: "presence",
    content: `${n} socket${n === 1 ? "" : "s"} attached`,
    sockets: n,
    ...(joined ? { joined: joined.id } : {}),
    ...(left ? { left: left.id } : {}),
  });
}
