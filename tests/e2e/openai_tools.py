#!/usr/bin/env python3
"""Asks for tool calls and several choices with the official `openai` client.

Usage: openai_tools.py BASE_URL MODEL PROMPT

Offers two functions (`get_weather`, `search`) and asks for:
  whole     one chat completion, not streamed
  helper    the same, streamed, accumulated by the client's own stream helper
            (`client.chat.completions.stream`, when this client version has it)
  deltas    the same, streamed with `create(stream=True)`, its deltas concatenated here
  forced    `tool_choice` naming the function `whole` did not call (`forced_name`)
  n3        `n=3` without tools, not streamed
  n3_stream `n=3` streamed: each choice's text concatenated by its `index`
  pydantic  a Pydantic model with a nested model list, a Literal and an Optional, offered with
            `openai.pydantic_function_tool` (its schema has `$defs` and `$ref`) and parsed by
            `client.beta.chat.completions.parse` and `.stream`: {whole, stream}, each the
            parsed arguments' `model_dump()`; null when this client version lacks the helpers

Prints one JSON object on stdout; each call is reported as {name, arguments, id, finish_reason,
content}. Exits 3 when the `openai` package is missing; any other failure raises (exit 1).
"""

import json
import sys

from openai_client import connect

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    "days": {"type": "integer", "minimum": 1, "maximum": 7},
                },
                "required": ["city", "unit"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the web.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string"},
                    "limit": {"type": "integer"},
                },
                "required": ["query"],
            },
        },
    },
]


def report(choice):
    """A non-streamed (or accumulated) choice's tool call."""
    message = choice.message
    calls = message.tool_calls or []
    call = calls[0] if calls else None
    return {
        "name": call.function.name if call else None,
        "arguments": call.function.arguments if call else None,
        "id": call.id if call else None,
        "calls": len(calls),
        "finish_reason": choice.finish_reason,
        "content": message.content,
    }


def concatenate(stream):
    """Reassembles the first tool call of choice 0 from raw stream chunks."""
    out = {"name": None, "arguments": "", "id": None, "calls": 0, "finish_reason": None,
           "content": None, "chunks": 0}
    for chunk in stream:
        out["chunks"] += 1
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                out["calls"] = max(out["calls"], call.index + 1)
                if call.id:
                    out["id"] = call.id
                if call.function and call.function.name:
                    out["name"] = call.function.name
                if call.function and call.function.arguments:
                    out["arguments"] += call.function.arguments
            if choice.finish_reason:
                out["finish_reason"] = choice.finish_reason
    return out


def pydantic_case(client, model, prompt):
    """The parsed arguments of a Pydantic tool, whole and streamed, as the SDK validates them."""
    import openai
    beta = getattr(getattr(client, "beta", None), "chat", None)
    if not hasattr(openai, "pydantic_function_tool") or beta is None:
        return None
    from typing import List, Literal, Optional

    from pydantic import BaseModel

    class Item(BaseModel):
        sku: str
        qty: int

    class Order(BaseModel):
        customer: str
        items: List[Item]
        priority: Literal["low", "high"]
        note: Optional[str]

    ask = {"model": model, "messages": [{"role": "user", "content": prompt}],
           "tools": [openai.pydantic_function_tool(Order)]}
    whole = beta.completions.parse(**ask).choices[0].message.tool_calls[0]
    with beta.completions.stream(**ask) as stream:
        for _ in stream:
            pass
        streamed = stream.get_final_completion().choices[0].message.tool_calls[0]
    return {
        "whole": whole.function.parsed_arguments.model_dump(),
        "stream": streamed.function.parsed_arguments.model_dump(),
    }


def main() -> int:
    connected = connect()
    if connected is None:
        return 3
    openai, client, model, prompt = connected
    messages = [{"role": "user", "content": prompt}]
    ask = {"model": model, "messages": messages, "tools": TOOLS}

    whole = report(client.chat.completions.create(**ask).choices[0])
    helper = None
    if hasattr(client.chat.completions, "stream"):
        with client.chat.completions.stream(**ask) as stream:
            for _ in stream:
                pass
            helper = report(stream.get_final_completion().choices[0])
    deltas = concatenate(client.chat.completions.create(**ask, stream=True))
    forced_name = "get_weather" if whole["name"] == "search" else "search"
    forced = report(client.chat.completions.create(
        **ask, tool_choice={"type": "function", "function": {"name": forced_name}}).choices[0])

    n3 = client.chat.completions.create(model=model, messages=messages, n=3)
    texts = {}
    for chunk in client.chat.completions.create(
            model=model, messages=messages, n=3, stream=True):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    print(json.dumps({
        "whole": whole,
        "helper": helper,
        "deltas": deltas,
        "forced": forced,
        "forced_name": forced_name,
        "n3": {
            "indexes": [c.index for c in n3.choices],
            "texts": [c.message.content for c in n3.choices],
            "completion_tokens": n3.usage.completion_tokens,
        },
        "n3_stream": [texts[i] for i in sorted(texts)],
        "pydantic": pydantic_case(client, model, prompt),
        "openai": openai.__version__,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
