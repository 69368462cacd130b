/**
 * What the load clients talk to: the gateway, the bare echo server, or the
 * Agents SDK peer. Each is a separate process (or processes, for workerd)
 * whose CPU and memory the bench reads from /proc.
 *
 * @module
 */

/** A WebSocket server under measurement. */
export interface Target {
  /** For tables and errors. */
  name: string;
  /** The URL the i-th client connects to (the peer routes each to its own agent). */
  socketUrl(i: number): string;
  /** The processes whose CPU and memory are the server's. */
  pids: number[];
  /** Whether the server greets every socket with a frame (`connected`). */
  greets: boolean;
}
