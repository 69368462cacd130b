/**
 * Wire types and codes of the Agent WebSocket protocol, re-exported from the
 * server's own protocol module so that the SDK and the server share one
 * definition.
 *
 * @example
 * ```ts
 * import { CLOSE, type ServerFrame } from "./protocol.ts";
 * const onFrame = (f: ServerFrame) => console.log(f.seq, f.type);
 * console.log(CLOSE.unauthorized); // 4001
 * ```
 * @module
 */
export * from "../supabase/functions/_shared/protocol/wire.ts";
export {
  CLOSE,
  type CloseCode,
  ERROR_CODES,
  type ErrorCode,
  type Feature,
  FEATURES,
  PROTOCOL_VERSION,
  SUBPROTOCOL,
  SUBPROTOCOL as PROTOCOL,
  TOKEN_SUBPROTOCOL_PREFIX,
} from "../supabase/functions/_shared/protocol/codes.ts";
