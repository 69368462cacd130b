/**
 * A relay that reads the upstream with `node:http` under Deno (a keep-alive
 * agent, `setEncoding("utf8")`, one `data` event per network chunk).
 *
 * Run: `deno run -A bench/relays/node_http.ts` with `BENCH_UPSTREAM_URL` set.
 *
 * @module
 */
import http from "node:http";
import { upstreamBody } from "../probes.ts";
import { serveRelay, splitEvents, upstreamUrl } from "./serve.ts";

const url = `${upstreamUrl()}/chat/completions`;
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });

await serveRelay((content, onDelta) =>
  new Promise<void>((resolve, reject) => {
    const body = upstreamBody(content);
    const req = http.request(url, {
      method: "POST",
      agent,
      headers: {
        "content-type": "application/json",
        accept: "text/event-stream",
        "content-length": Buffer.byteLength(body),
      },
    }, (res) => {
      res.setEncoding("utf8");
      let buffered = "";
      res.on("data", (text: string) => buffered = splitEvents(buffered + text, onDelta));
      res.on("end", () => resolve());
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  })
);
