/**
 * The built-in chat page: served to browsers, built from the committed bundle,
 * and driven in a real Chromium (Debian's `/usr/bin/chromium`, never a
 * downloaded browser) against a real server and the simulator upstream.
 *
 * @module
 */
import puppeteer, { type Page } from "puppeteer-core";
import { assert, assertEquals } from "./assert.ts";
import { eventually, startStack } from "./helpers.ts";
import { deleteFileTool } from "./fixtures/delete_file.ts";
import type { AgentDefinition } from "../supabase/functions/_shared/mod.ts";
import { defaultReply } from "../dev/openrouter_simulator.ts";
import { type RunningServer, startServer } from "../supabase/functions/_shared/http/app.ts";

// The callbacks handed to page.evaluate run in the browser; Deno's types have no DOM, so
// these name the little of it they use.
interface PageElement {
  textContent: string | null;
  dataset: Record<string, string | undefined>;
  value: string;
  disabled: boolean;
}
declare const document: {
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): ArrayLike<PageElement>;
};
declare const MutationObserver: new (callback: () => void) => {
  observe(target: PageElement, options: Record<string, boolean>): void;
};

const root = new URL("../", import.meta.url).pathname;
const PAGE_DIR = "supabase/functions/agent_websocket/page";
const CHROMIUM = "/usr/bin/chromium";
const hasChromium = (() => {
  try {
    return Deno.statSync(CHROMIUM).isFile;
  } catch {
    return false;
  }
})();

Deno.test("page: the committed chat.js is the bundle of page/app.ts and the SDK (else: deno task build:page)", async () => {
  const out = await Deno.makeTempFile({ suffix: ".js" });
  try {
    const build = await new Deno.Command(Deno.execPath(), {
      args: ["bundle", "--quiet", "--platform", "browser", "-o", out, `${PAGE_DIR}/app.ts`],
      cwd: root,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert(build.success, new TextDecoder().decode(build.stderr));
    const fresh = await Deno.readTextFile(out);
    const committed = await Deno.readTextFile(`${root}${PAGE_DIR}/chat.js`);
    assert(
      fresh === committed,
      `${PAGE_DIR}/chat.js is stale: run \`deno task build:page\` and commit it`,
    );
  } finally {
    await Deno.remove(out);
  }
});

Deno.test("page: a browser's GET gets the chat page, self-contained; other clients are unaffected", async () => {
  const stack = await startStack();
  try {
    for (const path of ["/", "/functions/v1/agent_websocket"]) {
      const res = await fetch(stack.server.url + path, {
        headers: { accept: "text/html,application/xhtml+xml,*/*;q=0.8" },
      });
      assertEquals(res.status, 200);
      assertEquals(res.headers.get("content-type"), "text/html; charset=utf-8");
      assert(res.headers.get("content-security-policy")?.includes("default-src 'none'"));
      const html = await res.text();
      for (const role of ["prompt", "send", "cancel", "state", "status"]) {
        assert(html.includes(`data-role="${role}"`), `data-role="${role}" missing`);
      }
      assert(!html.includes('src="./chat.js"'), "the script is inlined, so a saved page works");
      assert(html.includes("agent-websocket.v1"), "the SDK is in the page");
    }
    for (const accept of [undefined, "application/json", "*/*"]) {
      const res = await fetch(stack.server.url, { headers: accept ? { accept } : {} });
      assertEquals([res.status, await res.text()], [400, "Expected WebSocket request"], accept);
    }
  } finally {
    await stack.close();
  }
});

/** Text and state of the `n`-th answer on the page (1-based), or null before it exists. */
function answer(page: Page, n: number) {
  return page.evaluate((n) => {
    const el = document.querySelectorAll('[data-role="answer"]')[n - 1];
    return el ? { text: el.textContent ?? "", state: el.dataset.state ?? "" } : null;
  }, n);
}

/** Waits until the `n`-th answer satisfies `pred` (evaluated in the page). */
async function waitForAnswer(page: Page, n: number, state: string, ms = 10_000) {
  await page.waitForFunction(
    (n, state) =>
      document.querySelectorAll('[data-role="answer"]')[n - 1]?.dataset.state ===
        state,
    // Polled on a timer: a background tab (the other of two) gets no animation frames.
    { timeout: ms, polling: 50 },
    n,
    state,
  );
  return (await answer(page, n))!;
}

async function typeAndSend(page: Page, text: string) {
  // Typing goes to the tab in front (a background tab takes no input).
  await page.bringToFront();
  await page.type('[data-role="prompt"]', text);
  await page.click('[data-role="send"]');
}

/** Debian's Chromium, headless, with its own profile directory. */
function launch(profile: string) {
  return puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      // Two tabs at once: the one in the background must not be throttled or frozen.
      "--disable-background-timer-throttling",
      "--disable-renderer-backgrounding",
      "--disable-backgrounding-occluded-windows",
      `--user-data-dir=${profile}`,
    ],
  });
}

const waitForState = (page: Page, state: string, ms = 15_000) =>
  page.waitForSelector(`[data-role="state"][data-state="${state}"]`, { timeout: ms });

Deno.test({
  name: hasChromium
    ? "page in Chromium: type, send, watch it stream, cancel, approve a tool, survive a server restart, name a conversation"
    : `page in Chromium: SKIPPED, ${CHROMIUM} is missing (apt-get install -y chromium)`,
  ignore: !hasChromium,
  async fn(t) {
    const deleteFile = deleteFileTool();
    const agent: AgentDefinition = { tools: { delete_file: deleteFile.tool } };
    const stack = await startStack({}, { tokenDelayMs: 15 }, { agent });
    stack.sim.when("long story", {
      kind: "stream",
      tokens: Array.from({ length: 1000 }, (_, i) => `word${i} `),
      gapMs: 10,
    });
    let server: RunningServer = stack.server;
    const profile = await Deno.makeTempDir({ prefix: "page_test_chromium_" });
    const browser = await launch(profile);
    try {
      const page = await browser.newPage();
      const pageErrors: string[] = [];
      page.on("pageerror", (e) => pageErrors.push(String(e)));
      await page.goto(`${server.url}/`);
      await waitForState(page, "open");

      await t.step("type, send, and see the answer grow, then complete", async () => {
        // Every change of the answer's text, as the page shows it.
        await page.evaluate(() => {
          const seen: [number, string][] = [];
          (globalThis as unknown as { seen: typeof seen }).seen = seen;
          new MutationObserver(() => {
            const el = document.querySelector('[data-role="answer"]');
            if (el) seen.push([el.textContent?.length ?? 0, el.dataset.state ?? ""]);
          }).observe(document.querySelector('[data-role="log"]')!, {
            subtree: true,
            childList: true,
            characterData: true,
            attributes: true,
          });
        });
        const question = "What is a WebSocket?";
        await typeAndSend(page, question);
        const done = await waitForAnswer(page, 1, "done");
        assertEquals(done.text, defaultReply(question).join(""));
        const seen = await page.evaluate(() =>
          (globalThis as unknown as { seen: [number, string][] }).seen
        );
        const partial = seen.filter(([len, state]) =>
          state === "streaming" && len > 0 && len < done.text.length
        );
        assert(partial.length >= 5, `the answer grew in steps: ${JSON.stringify(seen)}`);
        assertEquals(
          await page.$eval('[data-role="prompt"]', (e) => (e as unknown as PageElement).value),
          "",
        );
      });

      await t.step("cancel a long answer: the text so far stays, upstream stops", async () => {
        await typeAndSend(page, "Tell me a long story");
        await page.waitForFunction(
          () =>
            (document.querySelectorAll('[data-role="answer"]')[1]?.textContent ?? "").length > 50,
          { timeout: 10_000 },
        );
        assert(
          !(await page.$eval(
            '[data-role="cancel"]',
            (b) => (b as unknown as PageElement).disabled,
          )),
          "Stop is enabled",
        );
        await page.click('[data-role="cancel"]');
        const stopped = await waitForAnswer(page, 2, "cancelled");
        assert(stopped.text.startsWith("word0 word1 "), stopped.text.slice(0, 40));
        assert(stopped.text.length < 1000 * 6, "stopped long before the end");
        await eventually(() => stack.sim.openStreams === 0, "the upstream stream closed");
        assert(
          await page.$eval('[data-role="cancel"]', (b) => (b as unknown as PageElement).disabled),
          "Stop is disabled",
        );
        // Nothing more arrives after the stop.
        assertEquals((await answer(page, 2))!.text, stopped.text);
      });

      await t.step(
        "a tool call that needs approval: Approve runs it, the answer goes on",
        async () => {
          stack.sim.script(
            {
              kind: "stream",
              tokens: ["Deleting. "],
              toolCalls: [{ id: "del_1", name: "delete_file", arguments: '{"path":"/tmp/a"}' }],
            },
            { kind: "stream", tokens: ["Done."] },
          );
          await typeAndSend(page, "delete /tmp/a");
          await page.waitForSelector('[data-tool-call-id="del_1"] [data-role="approve"]', {
            timeout: 5_000,
          });
          assertEquals(deleteFile.runs(), 0, "nothing runs before the human says yes");
          await page.click('[data-tool-call-id="del_1"] [data-role="approve"]');
          const done = await waitForAnswer(page, 3, "done");
          assert(done.text.includes("Done."), done.text);
          assertEquals(deleteFile.runs(), 1);
          const card = await page.$eval('[data-tool-call-id="del_1"]', (e) => e.textContent ?? "");
          assert(card.includes("/tmp/a"), card);
        },
      );

      await t.step("survive a server restart on the same port", async () => {
        const port = server.port;
        await server.shutdown("test_restart");
        await waitForState(page, "reconnecting", 5_000);
        server = startServer({ ...stack.config, port }, {
          hostname: "127.0.0.1",
          logSink: () => {},
          agent,
        });
        await waitForState(page, "open");
        // The new process did not know the session: the page says so and goes on.
        await page.waitForSelector('[data-role="notice"]', { timeout: 5_000 });
        const question = "Are you back?";
        await typeAndSend(page, question);
        const back = await waitForAnswer(page, 4, "done");
        assertEquals(back.text, defaultReply(question).join(""));
      });

      await t.step("a conversation name goes to the server as ?conversation=", async () => {
        const cdp = await page.createCDPSession();
        const sockets: string[] = [];
        cdp.on("Network.webSocketCreated", (e) => sockets.push(e.url));
        await cdp.send("Network.enable");
        await page.click('[data-role="settings"] summary');
        await page.type('[data-role="conversation"]', "trip plans");
        await page.click('[data-role="connect"]');
        await waitForState(page, "open");
        await eventually(() => sockets.length > 0, "the new socket");
        // Typed with a space, joined as a name the server takes.
        assertEquals(new URL(sockets.at(-1)!).searchParams.get("conversation"), "trip-plans");
        // The page's own address keeps it, so a reload or a shared link does too.
        assertEquals(new URL(page.url()).searchParams.get("conversation"), "trip-plans");
        await cdp.detach();
      });

      assertEquals(pageErrors, []);
    } finally {
      await browser.close();
      await Deno.remove(profile, { recursive: true });
      await server.shutdown("test_done");
      await stack.sim.close();
    }
  },
});

Deno.test({
  name: hasChromium
    ? "page in Chromium: two tabs on one conversation; what one asks, the other sees asked and answered"
    : `page in Chromium: SKIPPED, ${CHROMIUM} is missing (apt-get install -y chromium)`,
  ignore: !hasChromium,
  async fn() {
    const stack = await startStack({}, { tokenDelayMs: 15 });
    const profile = await Deno.makeTempDir({ prefix: "page_test_chromium_" });
    const browser = await launch(profile);
    try {
      const url = `${stack.server.url}/?conversation=shared-room`;
      const [a, b] = [await browser.newPage(), await browser.newPage()];
      const errors: string[] = [];
      for (const p of [a, b]) {
        p.on("pageerror", (e) => errors.push(String(e)));
        await p.goto(url);
        await waitForState(p, "open");
      }
      const question = "What do both tabs see?";
      await typeAndSend(a, question);
      const mine = await waitForAnswer(a, 1, "done");
      const seen = await waitForAnswer(b, 1, "done");
      assertEquals(mine.text, defaultReply(question).join(""));
      assertEquals(seen.text, mine.text);
      assertEquals(
        await b.$eval(
          '[data-role="their-question"]',
          (e) => (e as unknown as PageElement).textContent,
        ),
        question,
      );
      // And the other way round: the second tab asks, the first sees it.
      await typeAndSend(b, "And now from the other tab");
      const back = await waitForAnswer(a, 2, "done");
      assertEquals(back.text, defaultReply("And now from the other tab").join(""));
      assertEquals(errors, []);
    } finally {
      await browser.close();
      await Deno.remove(profile, { recursive: true });
      await stack.close();
    }
  },
});
