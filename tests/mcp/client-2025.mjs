// The official TypeScript SDK's own MCP client (protocol 2025-11-25) as a test driver: it spawns
// the example server (examples/mcp-typescript) over stdio and prints one JSON line per event:
//   {"event":"ready"}                               initialized
//   {"event":"elicitation","params":{…}}            the server's elicitation/create, answered ELICIT_ANSWER
//   {"event":"elicitation_complete","params":{…}}   notifications/elicitation/complete
//   {"event":"result","result":{…}}                 a tools/call result
// Each line read on stdin makes one `whoami` call; end of stdin closes the client and the server.
// Env: ELICITATION=url (declares {elicitation: {url: {}}}; anything else: {elicitation: {form: {}}}),
// ELICIT_ANSWER=accept|decline|cancel (default accept), and the server's env (AUTHLINK_URL, …).
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { ElicitRequestSchema, ElicitationCompleteNotificationSchema } from "@modelcontextprotocol/sdk/types.js";

const say = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const elicitation = process.env.ELICITATION === "url" ? { url: {} } : { form: {} };

const client = new Client({ name: "authlink-test-client", version: "0.0.0" }, { capabilities: { elicitation } });
client.setRequestHandler(ElicitRequestSchema, async (request) => {
  say({ event: "elicitation", params: request.params });
  return { action: process.env.ELICIT_ANSWER ?? "accept" };
});
client.setNotificationHandler(ElicitationCompleteNotificationSchema, (notification) => {
  say({ event: "elicitation_complete", params: notification.params });
});

await client.connect(
  new StdioClientTransport({
    command: process.execPath,
    args: ["--import", "tsx", "server.ts"],
    cwd: fileURLToPath(new URL("../../examples/mcp-typescript/", import.meta.url)),
    env: process.env,
    stderr: "inherit",
  }),
);
say({ event: "ready" });
for await (const _ of createInterface({ input: process.stdin })) {
  say({ event: "result", result: await client.callTool({ name: "whoami", arguments: {} }) });
}
await client.close();
