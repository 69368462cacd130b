/**
 * The `connected` notification: the first frame of a new session, or of a
 * socket that joins a conversation — what a client must know of this server
 * (protocol, features, tools, commands, limits, timings).
 *
 * @module
 */
import type { Config } from "../platform/config.ts";
import type { ModelBackend } from "../model/model.ts";
import { PROTOCOL_VERSION } from "../protocol/codes.ts";
import type { NotificationBody } from "../protocol/wire.ts";
import type { Peer, Session } from "../session/session.ts";
import type { AgentDefinition } from "./definition.ts";
import type { ToolSet } from "./tools.ts";

/** What this server offers, for every client to read in `connected.features`. */
export const SERVER_FEATURES = [
  "tools",
  "client_tools",
  "approval",
  "reasoning",
  "conversations",
  "memory",
] as const;

/** See {@linkcode createGreeting}. */
export interface Greeting {
  /** The `connected` frame for a session; in a conversation, for the socket `peer`. */
  connected(session: Session, peer?: Peer): NotificationBody;
}

/**
 * @example
 * ```ts ignore
 * const greeting = createGreeting({ config, model, agent, tools, commands: ["cancel"],
 *   allowedModels: [model.defaultModel] });
 * session.emit(greeting.connected(session));
 * ```
 */
export function createGreeting(deps: {
  config: Config;
  model: ModelBackend;
  agent: AgentDefinition;
  tools: ToolSet;
  /** Every command name, built-in first. */
  commands: string[];
  allowedModels: string[];
}): Greeting {
  const { config, model, agent, tools } = deps;
  const mode = config.simulator
    ? " [OFFLINE SIMULATOR: answers are simulated, no model is called]"
    : model.configured === false
    ? " [NOT CONFIGURED: OPENROUTER_API_KEY is not set; queries will fail]"
    : "";
  return {
    connected(session, peer) {
      return {
        type: "notification",
        event: "connected",
        content: session.conversation === null
          ? `Connected to Agent WebSocket. Session ID: ${session.id}${mode}`
          : `Connected to Agent WebSocket. Conversation: ${session.conversation}${mode}`,
        session_id: session.id,
        ...(session.conversation === null ? {} : {
          conversation: session.conversation,
          socket_id: peer?.id,
          sockets: session.peers.size,
        }),
        protocol: PROTOCOL_VERSION,
        agent: agent.name ?? config.agentName,
        model: model.defaultModel,
        models: deps.allowedModels,
        simulator: config.simulator,
        features: [...SERVER_FEATURES],
        tools: tools.describe(),
        commands: deps.commands,
        limits: {
          max_message_bytes: config.maxMessageBytes,
          max_content_chars: config.maxContentChars,
          max_queue: config.maxQueue,
          rate_limit_per_minute: config.rateLimitPerMinute,
          rate_limit_burst: config.rateLimitBurst,
          max_history: config.maxHistory,
          max_tool_iterations: config.maxToolIterations,
        },
        heartbeat_ms: config.heartbeatSeconds * 1000,
        resume_window_ms: config.resumeWindowMs,
      };
    },
  };
}
