/**
 * Small HTTP answers shared by the routes.
 *
 * @module
 */

/**
 * A JSON response.
 *
 * @example
 * ```ts
 * import { json } from "./respond.ts";
 * const res = json({ status: "ok" });
 * console.log(res.headers.get("content-type")); // application/json
 * ```
 */
export function json(
  body: unknown,
  status = 200,
  headers: Record<string, string> = {},
): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}
