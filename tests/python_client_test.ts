/**
 * The Python client (`clients/python`) against the real server, run by Debian's
 * `/usr/bin/python3` with `python3-websockets`. This side owns what Python cannot reach: the
 * server (auth on, so every test sends its token as a subprotocol), the OpenRouter stand-in, a
 * TCP proxy the network cut goes through, and a small control server the Python tests call to
 * cut, blackhole or heal that network and to restart the server. Skipped with one line when
 * `/usr/bin/python3` cannot import `websockets`.
 *
 * @module
 */
import { SignJWT } from "jose";
import {
  CLOSE,
  ERROR_CODES,
  PROTOCOL_VERSION,
  SUBPROTOCOL,
  TOKEN_SUBPROTOCOL_PREFIX,
} from "../supabase/functions/_shared/protocol/codes.ts";
import { assert, assertEquals } from "./assert.ts";
import { type Stack, startStack } from "./helpers.ts";
import { startTcpProxy } from "./tcp_proxy.ts";

// Another interpreter (a venv with a newer websockets) can be tried with PYTHON_CLIENT_PYTHON.
const PYTHON = Deno.env.get("PYTHON_CLIENT_PYTHON") ?? "/usr/bin/python3";
const pythonDir = new URL("../clients/python/", import.meta.url).pathname;
const HS_SECRET = "python-client-hs256-secret-for-tests-only-0123456789";
// Never contacted: HS256 tokens are verified locally with the secret.
const SUPABASE_URL = "http://127.0.0.1:9";

async function python(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(PYTHON, {
    args,
    cwd: pythonDir,
    env: { PYTHONDONTWRITEBYTECODE: "1", PYTHONUNBUFFERED: "1", PYTHONDEVMODE: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { success: out.success, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

async function pythonHasWebsockets(): Promise<boolean> {
  try {
    return (await python(["-c", "import websockets"])).success;
  } catch {
    return false; // no /usr/bin/python3 at all
  }
}

const available = await pythonHasWebsockets();
if (!available) {
  console.log(
    `skipped: Python client tests (${PYTHON} cannot import websockets); ` +
      "apt-get install -y python3-websockets to run them",
  );
}

/** Starts the server the way the Python tests expect (see clients/python/tests/test_server.py). */
async function startPythonStack(port = 0): Promise<Stack> {
  const stack = await startStack({
    PORT: String(port),
    AUTH_MODE: "supabase",
    SUPABASE_URL,
    SUPABASE_JWT_SECRET: HS_SECRET,
    RESUME_WINDOW_SECONDS: "10",
  });
  stack.sim.when("[slow]", {
    kind: "stream",
    tokens: Array.from({ length: 40 }, (_, i) => `s${i} `),
    gapMs: 15,
  });
  stack.sim.when("[credits]", { kind: "http_error", status: 402 });
  return stack;
}

function token(): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({
    sub: "python-user",
    role: "authenticated",
    aud: "authenticated",
    iss: `${SUPABASE_URL}/auth/v1`,
    iat: now,
    exp: now + 3600,
  }).setProtectedHeader({ alg: "HS256", typ: "JWT" }).sign(new TextEncoder().encode(HS_SECRET));
}

Deno.test({
  name:
    "python client: streams, commands, typed errors, conversations, memory, and survives a network cut and a restart",
  ignore: !available,
  async fn() {
    let stack = await startPythonStack();
    const port = stack.server.port;
    const proxy = startTcpProxy(port);
    const actions: Record<string, () => void | Promise<void>> = {
      cut: () => proxy.cutAll(),
      // A network gone quiet: open connections pass nothing, new ones are refused.
      blackhole: () => void (proxy.blackhole = proxy.refuse = true),
      heal: () => void (proxy.blackhole = proxy.refuse = false),
      restart: async () => {
        await stack.close();
        stack = await startPythonStack(port);
      },
    };
    const control = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen: () => {} },
      async (req) => {
        const action = actions[new URL(req.url).pathname.slice(1)];
        if (req.method !== "POST" || !action) {
          return new Response("no such action", { status: 404 });
        }
        await action();
        return new Response("done");
      },
    );
    try {
      const run = await python(["-m", "unittest", "discover", "-s", "tests", "-v"], {
        AGENT_WS_URL: stack.wsUrl,
        AGENT_WS_PROXY_URL: `ws://127.0.0.1:${proxy.port}`,
        AGENT_WS_CONTROL_URL: `http://127.0.0.1:${(control.addr as Deno.NetAddr).port}`,
        AGENT_WS_TOKEN: await token(),
      });
      // unittest reports on stderr: one "name (module.Class.name) ... ok" line per test.
      const report = run.stderr + run.stdout;
      assert(run.success, `the Python tests failed:\n${report}`);
      assert(!/skipped/i.test(report), `no Python test may be skipped here:\n${report}`);
      // Dev mode reports what asyncio would otherwise swallow: a future whose error nobody
      // read, a task destroyed while pending, a socket never closed.
      assert(
        !/Traceback|Warning|never retrieved|never awaited|was destroyed/.test(report),
        `the Python tests left warnings:\n${report}`,
      );
      for (
        const name of [
          "test_streams_an_answer_whose_deltas_join_to_the_final_content",
          "test_commands_answer_with_their_notifications",
          "test_an_error_terminal_frame_raises_a_typed_agent_error",
          "test_a_network_cut_mid_answer_resumes_with_no_delta_lost_or_repeated",
          "test_an_ask_in_flight_on_a_lost_session_fails_instead_of_hanging",
          "test_an_overlapping_replay_is_deduplicated_by_seq",
          "test_frames_for_other_sockets_count_for_seq_only",
          "test_two_clients_of_a_conversation_see_one_answer_stream_and_presence",
          "test_memory_commands_list_search_and_clear_conversations",
        ]
      ) {
        assert(new RegExp(`^${name} .*\\.\\.\\. ok$`, "m").test(report), `${name} ran:\n${report}`);
      }
    } finally {
      await control.shutdown();
      await proxy.close();
      await stack.close();
    }
  },
});

Deno.test({
  name: "python client: its codes are the server's codes",
  ignore: !available,
  async fn() {
    const run = await python([
      "-c",
      "import json; from agent_websocket import codes as c; print(json.dumps({" +
      "'close': sorted(int(x) for x in c.Close), 'errors': list(c.ERROR_CODES), " +
      "'subprotocol': c.SUBPROTOCOL, 'prefix': c.TOKEN_SUBPROTOCOL_PREFIX, " +
      "'version': c.PROTOCOL_VERSION}))",
    ]);
    assert(run.success, run.stderr);
    assertEquals(JSON.parse(run.stdout), {
      close: Object.values(CLOSE).sort((a, b) => a - b),
      errors: [...ERROR_CODES],
      subprotocol: SUBPROTOCOL,
      prefix: TOKEN_SUBPROTOCOL_PREFIX,
      version: PROTOCOL_VERSION,
    });
  },
});
