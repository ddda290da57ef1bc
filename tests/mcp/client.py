"""An MCP client of another implementation (the official Python SDK, PyPI `mcp`) against
AllSource, over streamable HTTP (`/mcp`) and over stdio (`allsource mcp`).

Usage: client.py http URL [API_KEY]  |  client.py stdio BINARY URL [API_KEY]
Prints one JSON object with what it saw; exits non-zero on any failure. The SDK validates
each structured result against the tool's output schema, so a call that returns what its
schema does not describe fails here.
"""

import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamablehttp_client


async def exercise(session: ClientSession) -> dict:
    init = await session.initialize()
    tools = (await session.list_tools()).tools
    appended = await session.call_tool(
        "ingest_event",
        {"entity_id": "py-1", "event_type": "py.checked", "payload": {"ok": True}},
    )
    queried = await session.call_tool("query_events", {"entity_id": "py-1"})
    explained = await session.call_tool("explain_entity", {"entity_id": "py-1"})
    refused = await session.call_tool("query_events", {"limit": 0})
    resources = (await session.list_resources()).resources
    return {
        "protocol_version": init.protocolVersion,
        "server": init.serverInfo.name,
        "tools": sorted(t.name for t in tools),
        "appended_error": appended.isError,
        "queried": queried.structuredContent,
        "explained": explained.structuredContent,
        "refused_error": refused.isError,
        "refused_text": refused.content[0].text if refused.content else "",
        "resources": sorted(str(r.uri) for r in resources),
    }


async def over_http(url: str, key: str | None) -> dict:
    headers = {"X-API-Key": key} if key else None
    async with streamablehttp_client(url, headers=headers) as (read, write, _):
        async with ClientSession(read, write) as session:
            return await exercise(session)


async def over_stdio(binary: str, url: str, key: str | None) -> dict:
    env = {"ALLSOURCE_API_KEY": key} if key else {}
    env["RUST_LOG"] = "warn"
    params = StdioServerParameters(command=binary, args=["mcp", "--url", url], env=env)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            return await exercise(session)


def main() -> None:
    mode = sys.argv[1]
    if mode == "http":
        key = sys.argv[3] if len(sys.argv) > 3 else None
        seen = asyncio.run(over_http(sys.argv[2], key))
    else:
        key = sys.argv[4] if len(sys.argv) > 4 else None
        seen = asyncio.run(over_stdio(sys.argv[2], sys.argv[3], key))
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
