/**
 * Client SDK for the `agent_websocket` edge function (protocol v1 with the v1.1 additions:
 * tools, approvals, reasoning, conversations, memory). `AgentClient` speaks the protocol;
 * `ReconnectingTransport` is the reconnecting socket beneath it, usable on its own.
 *
 * @example
 * ```ts
 * import { AgentClient } from "./mod.ts";
 * const client = new AgentClient("ws://127.0.0.1:8000");
 * async function demo() {
 *   await client.connect();
 *   console.log((await client.ask("Hello!").response).content);
 *   client.close();
 * }
 * ```
 * @module
 */
export {
  AgentClient,
  type AgentClientEvents,
  type AgentClientOptions,
  type AskEvent,
  type AskHandle,
  type AskOptions,
} from "./agent_client.ts";
export { AgentError } from "./errors.ts";
export {
  checkConversation,
  CONVERSATION_NAME,
  type ConversationsFrame,
  conversationUrl,
  type MemoryClearedFrame,
  type PresenceFrame,
  type SearchMemoryFrame,
  type SearchMemoryOptions,
} from "./conversation.ts";
export {
  type ClientState,
  type HeartbeatOptions,
  ReconnectingTransport,
  type TokenProvider,
  type TransportEvents,
  type TransportHooks,
  type TransportOptions,
  type WebSocketConstructor,
} from "./transport.ts";
export {
  type ApprovalDecision,
  type ApprovalHandler,
  type ApprovalRequest,
  type ClientTool,
  type ClientTools,
  type ToolContext,
} from "./tools.ts";
export {
  backoffDelay,
  type CloseDisposition,
  closeDisposition,
  DEFAULT_RECONNECT,
  type ReconnectOptions,
} from "./backoff.ts";
export {
  type ClientFrame,
  type ClientToolDeclaration,
  CLOSE,
  type CloseCode,
  type ConversationSummary,
  ERROR_CODES,
  type ErrorCode,
  type ErrorFrame,
  type Feature,
  FEATURES,
  type FinalResponse,
  type FrameBase,
  type MemoryHit,
  type NotificationFrame,
  type PongFrame,
  type PresenceBody,
  PROTOCOL,
  PROTOCOL_VERSION,
  type QueryFrame,
  type ReasoningFrame,
  type ResponseFrame,
  type ServerFrame,
  type StatusFrame,
  type StatusState,
  type Timing,
  type ToolCallFrame,
  type ToolExecutor,
  type ToolResultFrame,
  type Usage,
} from "./protocol.ts";
