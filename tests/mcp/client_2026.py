"""The official MCP Python SDK's own client (`mcp.client.Client`, which drives the
multi-round-trip retries), running examples/mcp-python/server.py over stdio at protocol
2026-07-28, for tests/api/examples_py.rs. One JSON object per stdout line:

  {"protocol_version": "..."}            once connected
  {"elicitation": {mode, message, url}}  when the server asks (URL mode declared only with
                                          --answer accept|decline|cancel; --answer none
                                          declares no elicitation at all)
  {"result": <CallToolResult>}           each whoami result

With --calls N it calls the tool N times, reading one line from stdin before each call after the
first (so the test can act in between). The SDK's own multi-round-trip driver retries each call
with the requestState and the answer."""

import argparse
import json
import os
import sys

import anyio
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp_types import ElicitResult

SERVER = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "mcp-python", "server.py")


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--answer", choices=["accept", "decline", "cancel", "none"], default="accept")
    parser.add_argument("--calls", type=int, default=1)
    args = parser.parse_args()

    async def on_elicitation(_ctx, params):
        emit({"elicitation": params.model_dump(by_alias=True, exclude_none=True, mode="json")})
        return ElicitResult(action=args.answer)

    server = StdioServerParameters(command=sys.executable, args=[SERVER], env=dict(os.environ))
    # mode "auto" (the default): server/discover, which settles on 2026-07-28 with this server.
    client = Client(
        server,
        elicitation_callback=None if args.answer == "none" else on_elicitation,
    )
    async with client:
        emit({"protocol_version": client.protocol_version})
        for i in range(args.calls):
            if i:
                await anyio.to_thread.run_sync(sys.stdin.readline)
            result = await client.call_tool("whoami", {})
            emit({"result": result.model_dump(by_alias=True, exclude_none=True, mode="json")})


if __name__ == "__main__":
    anyio.run(main)
