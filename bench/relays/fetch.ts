/**
 * A relay that reads the upstream with `fetch`, a plain body reader and a
 * `TextDecoder`: what the gateway did before it had its own transport.
 *
 * Run: `deno run -A bench/relays/fetch.ts` with `BENCH_UPSTREAM_URL` set.
 *
 * @module
 */
import { upstreamBody } from "../probes.ts";
import { serveRelay, splitEvents, upstreamUrl } from "./serve.ts";

const url = `${upstreamUrl()}/chat/completions`;

await serveRelay(async (content, onDelta) => {
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "text/event-stream" },
    body: upstreamBody(content),
  });
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered = splitEvents(buffered + decoder.decode(value, { stream: true }), onDelta);
  }
});
