import { assert, assertEquals } from "./assert.ts";
import { startStack, TestClient } from "./helpers.ts";

Deno.test("plain HTTP gets 400 Expected WebSocket request, on / and the function path", async () => {
  const stack = await startStack();
  try {
    for (const path of ["/", "/functions/v1/agent_websocket", "/agent_websocket"]) {
      const res = await fetch(stack.server.url + path);
      assertEquals(res.status, 400);
      assertEquals(await res.text(), "Expected WebSocket request");
    }
  } finally {
    await stack.close();
  }
});

Deno.test("GET /health reports status, version, sessions, in_flight and uptime", async () => {
  const stack = await startStack();
  try {
    const { client } = await TestClient.open(stack.wsUrl + "/functions/v1/agent_websocket");
    for (const path of ["/health", "/functions/v1/agent_websocket/health"]) {
      const res = await fetch(stack.server.url + path);
      assertEquals(res.status, 200);
      assertEquals(res.headers.get("content-type"), "application/json");
      const body = await res.json();
      assertEquals(body.status, "ok");
      assertEquals(body.sessions, 1);
      assertEquals(body.in_flight, 0);
      assert(typeof body.version === "string" && typeof body.uptime_s === "number");
    }
    await client.close();
  } finally {
    await stack.close();
  }
});

Deno.test("the agent-websocket.v1 subprotocol is selected when offered", async () => {
  const stack = await startStack();
  try {
    const client = await TestClient.connect(stack.wsUrl, ["agent-websocket.v1"]);
    assertEquals(client.ws.protocol, "agent-websocket.v1");
    await client.waitFor((f) => f.event === "connected", "connected");
    await client.close();
  } finally {
    await stack.close();
  }
});
