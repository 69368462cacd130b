/**
 * The floor: a relay that reads the upstream straight off a `Deno.connect`
 * socket. One connection per answer (`connection: close`), the response
 * head skipped, the chunked framing undone in place, nothing else.
 *
 * Run: `deno run -A bench/relays/socket.ts` with `BENCH_UPSTREAM_URL` set.
 *
 * @module
 */
import { upstreamBody } from "../probes.ts";
import { serveRelay, splitEvents, upstreamUrl } from "./serve.ts";

const url = new URL(`${upstreamUrl()}/chat/completions`);
const encoder = new TextEncoder();

await serveRelay(async (content, onDelta) => {
  const body = encoder.encode(upstreamBody(content));
  const head = encoder.encode(
    `POST ${url.pathname} HTTP/1.1\r\nhost: ${url.host}\r\n` +
      "content-type: application/json\r\naccept: text/event-stream\r\n" +
      `content-length: ${body.length}\r\nconnection: close\r\n\r\n`,
  );
  const conn = await Deno.connect({ hostname: url.hostname, port: Number(url.port) });
  try {
    const request = new Uint8Array(head.length + body.length);
    request.set(head);
    request.set(body, head.length);
    await conn.write(request);
    const buf = new Uint8Array(16 * 1024);
    const decoder = new TextDecoder();
    let start = 0;
    let end = 0;
    let inHead = true;
    let remaining = 0; // bytes of the current chunk still to come; -1 between chunks
    let buffered = "";
    for (;;) {
      if (start === end) start = end = 0;
      else if (end === buf.length) {
        buf.copyWithin(0, start, end);
        end -= start;
        start = 0;
      }
      const n = await conn.read(buf.subarray(end));
      if (n === null) return;
      end += n;
      if (inHead) {
        const at = buf.subarray(start, end).findIndex((b, i, a) =>
          b === 13 && a[i + 1] === 10 && a[i + 2] === 13 && a[i + 3] === 10
        );
        if (at < 0) continue;
        start += at + 4;
        inHead = false;
      }
      while (start < end) {
        if (remaining > 0) {
          const take = Math.min(remaining, end - start);
          buffered = splitEvents(
            buffered + decoder.decode(buf.subarray(start, start + take), { stream: true }),
            onDelta,
          );
          start += take;
          remaining -= take;
          continue;
        }
        // A size line ("1a\r\n"), or the CRLF that ends a chunk's data.
        const lf = buf.indexOf(10, start);
        if (lf < 0 || lf >= end) break;
        const line = String.fromCharCode(...buf.subarray(start, lf)).trim();
        start = lf + 1;
        if (line === "") continue;
        remaining = parseInt(line, 16);
        if (remaining === 0) return;
      }
    }
  } finally {
    conn.close();
  }
});
