/**
 * `deno task start`: the deployed entry point (`agent_websocket/index.ts`),
 * unchanged, after loading `.env` like `deno task dev` does. The edge runtime
 * never runs this file, so deployments read only their secrets.
 *
 * @module
 */
import { loadDotEnv } from "./dotenv.ts";

// Variables already in the environment win over the file, as in `dev`.
for (const [key, value] of Object.entries(loadDotEnv(".env"))) {
  if (Deno.env.get(key) === undefined) Deno.env.set(key, value);
}
// Imported only now: the entry point reads the environment as it loads.
await import("../supabase/functions/agent_websocket/index.ts");
