/**
 * Client SDK for the `agent_websocket` edge function (protocol v1).
 *
 * @example
 * ```ts
 * import { AgentClient } from "./mod.ts";
 * const client = new AgentClient("ws://127.0.0.1:8000");
 * await client.connect();
 * console.log((await client.ask("Hello!").response).content);
 * client.close();
 * ```
 * @module
 */
export {
  AgentClient,
  type AgentClientEvents,
  type AgentClientOptions,
  AgentError,
  type AskHandle,
  type AskOptions,
  type ClientFrame,
  type ClientState,
  type ErrorFrame,
  type FinalResponse,
  type FrameBase,
  type HeartbeatOptions,
  type NotificationFrame,
  type PongFrame,
  PROTOCOL,
  type ReconnectOptions,
  type ResponseFrame,
  type ServerFrame,
  type StatusFrame,
  type StatusState,
  type Usage,
  type WebSocketConstructor,
} from "./agent_client.ts";
export { backoffDelay, DEFAULT_RECONNECT } from "./backoff.ts";
