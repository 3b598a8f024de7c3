"""A minimal MCP server (Python SDK 2.x, protocol 2026-07-28, stdio) with one tool that calls
Salesforce as the user: authlink gives it the user's token, or exactly what to return instead."""

import hashlib
import json
import os

import httpx2  # the HTTP client the mcp SDK itself uses
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, InputRequiredResult, TextContent

AUTHLINK = os.environ["AUTHLINK_URL"]
KEY = os.environ["AUTHLINK_KEY"]
TOKEN_URL = (
    f"{AUTHLINK}/v1/bots/{os.environ['AUTHLINK_BOT']}"
    f"/integrations/{os.environ['AUTHLINK_INTEGRATION']}/access-token"
)
# Over stdio there is no MCP authorization: the user is whoever runs the server. Over HTTP, take
# it from the verified access token (its `sub`), never from anything the client sends.
USER = os.environ["MCP_USER_ID"]

# MCPServer wraps every requestState in its own sealed envelope (a per-process key, bound to the
# tool name and arguments) and unwraps it before the tool runs: the tool reads authlink's state
# as authlink sealed it. Kept (it cannot be switched off here, and costs nothing on stdio).
mcp = MCPServer("authlink-example")


@mcp.tool()
async def whoami(ctx: Context) -> CallToolResult | InputRequiredResult:
    """Who the user is at Salesforce."""
    # A retry's requestState only serves the same call: name it by a digest of tool + arguments.
    call = json.dumps({"tool": "whoami", "arguments": {}}, sort_keys=True).encode()
    caps = ctx.client_capabilities  # on 2026-07-28 the client sends them with every request
    body = {
        "user_id": USER,
        "tool_call": "sha256:" + hashlib.sha256(call).hexdigest(),
        "authorize": {"mcp": {
            "protocol_version": ctx.protocol_version,
            "capabilities": caps.model_dump(by_alias=True, exclude_none=True) if caps else {},
        }},
    }
    if ctx.request_state:  # the client's retry: authlink holds it until the person finishes
        body |= {"request_state": ctx.request_state, "wait": 45}  # ≤ 50, below 60 s timeouts
        answer = (ctx.input_responses or {}).get("authlink")  # the client's answer to the URL
        if answer is not None:  # forwarded: "decline" or "cancel" ends the session at once
            body["input_response"] = {"action": answer.action}
    async with httpx2.AsyncClient(timeout=55) as http:
        r = await http.post(TOKEN_URL, json=body, headers={"authorization": f"Bearer {KEY}"})
        got = r.json()
        if r.status_code == 200:  # connected: the API call this tool is for
            me = await http.get(
                f"{got['instance_url']}/services/oauth2/userinfo",
                headers={"authorization": f"Bearer {got['access_token']}"},
            )
            me.raise_for_status()
            return CallToolResult(content=[TextContent(type="text", text=me.text)],
                                  structured_content=me.json())
    offer = got.get("mcp")
    if r.status_code == 404 and offer and offer["use"] == "input_required_2026":
        # The URL elicitation; the SDK client shows it, then retries with the requestState.
        return InputRequiredResult.model_validate(offer["input_required_2026"])
    if offer:  # no URL mode (or a 2025-11-25 client): the link as text; 410: denied, expired…
        return CallToolResult.model_validate(offer["tool_result"])
    return CallToolResult(content=[TextContent(type="text", text=r.text)], is_error=True)


if __name__ == "__main__":
    mcp.run("stdio")
