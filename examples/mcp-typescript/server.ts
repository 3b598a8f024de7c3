// A minimal MCP server (stdio, protocol 2025-11-25) with one tool, `whoami`, that calls Salesforce
// on the user's behalf through authlink. authlink answers with the user's token, or with exactly
// what to show the user when they have not connected yet; this server never sees OAuth.
import { createHash } from "node:crypto";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { LATEST_PROTOCOL_VERSION, type CallToolResult } from "@modelcontextprotocol/sdk/types.js";

const env = (name: string): string => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const [AUTHLINK_URL, AUTHLINK_KEY, BOT, INTEGRATION] = ["AUTHLINK_URL", "AUTHLINK_KEY", "AUTHLINK_BOT", "AUTHLINK_INTEGRATION"].map(env);
// A stdio server has one user. (A remote server would take the `sub` of its MCP authorization.)
const USER_ID = env("MCP_USER_ID");

/** One access-token call to authlink: `{user_id, …body}` → status and JSON. */
async function authlink(body: object): Promise<{ status: number; body: any }> {
  const r = await fetch(`${AUTHLINK_URL}/v1/bots/${BOT}/integrations/${INTEGRATION}/access-token`, {
    method: "POST",
    headers: { authorization: `Bearer ${AUTHLINK_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ user_id: USER_ID, ...body }),
  });
  return { status: r.status, body: await r.json() };
}

/** The tool's real work, with the user's token: who they are in Salesforce. */
async function userinfo(token: { access_token: string; instance_url: string }): Promise<CallToolResult> {
  const r = await fetch(`${token.instance_url}/services/oauth2/userinfo`, {
    headers: { authorization: `Bearer ${token.access_token}` },
  });
  return { content: [{ type: "text", text: await r.text() }], isError: !r.ok };
}

const server = new McpServer({ name: "authlink-example", version: "0.0.0" });

server.registerTool("whoami", { title: "Who am I in Salesforce", description: "The user's Salesforce identity." }, async () => {
  // Names this tool call (tool + arguments) so authlink can bind the session to it.
  const tool_call = "sha256:" + createHash("sha256").update(JSON.stringify({ name: "whoami", arguments: {} })).digest("hex");
  // What the client declared at initialize (e.g. {elicitation: {url: {}}}): authlink picks the payload from it.
  const capabilities = server.server.getClientCapabilities() ?? {};
  let r = await authlink({ tool_call, authorize: { mcp: { protocol_version: LATEST_PROTOCOL_VERSION, capabilities } } });

  if (r.status === 404 && r.body.mcp?.use === "elicitation_2025") {
    // The client has URL mode: ask it to open authlink's link ({mode: "url", message, url, elicitationId}).
    const params = r.body.mcp.elicitation_2025;
    const session_id: string = params.elicitationId; // = authlink's session id
    const { action } = await server.server.elicitInput(params);
    if (action === "accept") {
      // The user is opening the link: wait for them (each call waits up to 45 s, then we ask again).
      do r = await authlink({ tool_call, session_id, wait: 45 });
      while (r.status === 404 && r.body.code === "authorization_required");
      // Tell the client the out-of-band step is done (it may close its prompt).
      if (r.status === 200) await server.server.createElicitationCompletionNotifier(session_id)();
    } else {
      // Declined or cancelled: authlink cancels the session and says what to tell the user (410).
      r = await authlink({ tool_call, session_id, input_response: { action } });
    }
  }

  if (r.status === 200) return userinfo(r.body);
  // The link as text (a client without URL mode), or why the session ended (410: denied, expired, …).
  if (r.body.mcp?.tool_result) return r.body.mcp.tool_result;
  return { content: [{ type: "text", text: `authlink answered ${r.status}: ${r.body.detail ?? ""}` }], isError: true };
});

await server.connect(new StdioServerTransport());
