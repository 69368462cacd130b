"""Python asyncio client for the agent_websocket Supabase Edge Function (protocol v1, with
the v1.1 conversations and memory).

Example::

    import asyncio
    from agent_websocket import AgentClient

    async def main():
        async with AgentClient("ws://127.0.0.1:8000") as client:
            answer = client.ask("What is a WebSocket?")
            async for delta in answer:
                print(delta, end="", flush=True)
            print()
            print((await answer)["usage"])

    asyncio.run(main())
"""

from .ask import Ask
from .backoff import (
    ReconnectPolicy,
    backoff_delay,
    close_disposition,
    conversation_url,
    is_conversation_name,
    is_duplicate,
    resume_url,
)
from .client import AgentClient
from .codes import ERROR_CODES, PROTOCOL_VERSION, SUBPROTOCOL, Close
from .errors import AgentError

__all__ = [
    "AgentClient",
    "AgentError",
    "Ask",
    "Close",
    "ERROR_CODES",
    "PROTOCOL_VERSION",
    "ReconnectPolicy",
    "SUBPROTOCOL",
    "backoff_delay",
    "close_disposition",
    "conversation_url",
    "is_conversation_name",
    "is_duplicate",
    "resume_url",
]
__version__ = "0.1.0"
