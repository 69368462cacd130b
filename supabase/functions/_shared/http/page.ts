/**
 * The built-in chat page: a browser that opens the function's URL gets a
 * small chat client instead of `400 Expected WebSocket request`. The page is
 * `agent_websocket/page/index.html` with its script (`page/chat.js`, the
 * committed browser bundle of `page/app.ts` and the client SDK) inlined, so
 * the served HTML is one self-contained file that also works when saved and
 * opened from disk (see docs/page.md).
 *
 * @module
 */
import type { Logger } from "../platform/log.ts";

const PAGE_DIR = new URL("../../agent_websocket/page/", import.meta.url);
const SCRIPT_TAG = '<script type="module" src="./chat.js"></script>';

/** The assembled page; `null` once reading it failed (e.g. a deploy without the files). */
let cached: string | null | undefined;

function assemble(log?: Pick<Logger, "warn">): string | null {
  if (cached !== undefined) return cached;
  try {
    const html = Deno.readTextFileSync(new URL("index.html", PAGE_DIR));
    const script = Deno.readTextFileSync(new URL("chat.js", PAGE_DIR));
    if (!html.includes(SCRIPT_TAG)) throw new Error(`index.html lacks ${SCRIPT_TAG}`);
    // "</script" inside the script (strings, comments) would end the inline element early.
    const inline = `<script type="module">\n${
      script.replaceAll("</script", "<\\/script")
    }</script>`;
    cached = html.replace(SCRIPT_TAG, () => inline);
  } catch (err) {
    // Deployed functions carry only their module graph, and hosted Supabase serves no
    // text/html anyway: without the files the request gets the usual 400.
    log?.warn("page_unavailable", { err: String(err) });
    cached = null;
  }
  return cached;
}

/** Whether the request is a browser navigating to the function (not a WebSocket client). */
function wantsPage(req: Request): boolean {
  if (req.method !== "GET") return false;
  if ((req.headers.get("upgrade") ?? "").toLowerCase() === "websocket") return false;
  return (req.headers.get("accept") ?? "").toLowerCase().includes("text/html");
}

/**
 * Answers a browser's `GET` (its `Accept` names `text/html`) with the chat
 * page; returns `null` for every other request, which the caller handles as
 * before. `log` hears once why the page could not be read, if it could not.
 *
 * @example
 * ```ts
 * Deno.serve((req) => pageResponse(req) ?? new Response("Expected WebSocket request", { status: 400 }));
 * ```
 */
export function pageResponse(req: Request, log?: Pick<Logger, "warn">): Response | null {
  if (!wantsPage(req)) return null;
  const html = assemble(log);
  if (html === null) return null;
  return new Response(html, {
    headers: {
      "content-type": "text/html; charset=utf-8",
      "cache-control": "no-store",
      "x-content-type-options": "nosniff",
      "referrer-policy": "no-referrer",
      // The page talks only to WebSockets; nothing else may load or frame it.
      "content-security-policy": "default-src 'none'; script-src 'unsafe-inline'; " +
        "style-src 'unsafe-inline'; img-src data:; connect-src ws: wss:; " +
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    },
  });
}
