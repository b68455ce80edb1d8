#!/usr/bin/env python3
"""Streams one chat completion with the official `openai` client and reports what arrived when.

Usage: openai_stream.py BASE_URL MODEL PROMPT

One plain (not streamed) completion goes first on the same client, so that connection set-up and
the client's lazy imports are not part of the timed stream: two requests reach the gateway.

Prints one JSON object on stdout:
  chunks         chunks the client yielded (the client consumes `data: [DONE]` itself)
  content        the concatenated `delta.content` of every chunk
  first_chunk_s  seconds from the request to the first chunk
  last_chunk_s   seconds from the request to the last chunk
  usage          the `usage` object of the final chunk, or null
  finish_reason  the last `finish_reason` seen, or null
  openai         the client's version
Exits 3 when the `openai` package is missing; any other failure raises (exit 1, traceback).
"""

import json
import sys
import time

from openai_client import connect


def main() -> int:
    connected = connect()
    if connected is None:
        return 3
    openai, client, model, prompt = connected
    client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "warm-up"}], max_tokens=1)
    arrivals = []
    content = []
    usage = None
    finish_reason = None
    start = time.monotonic()
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        arrivals.append(time.monotonic() - start)
        for choice in chunk.choices:
            if choice.delta and choice.delta.content:
                content.append(choice.delta.content)
            if choice.finish_reason:
                finish_reason = choice.finish_reason
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
    print(json.dumps({
        "chunks": len(arrivals),
        "content": "".join(content),
        "first_chunk_s": arrivals[0] if arrivals else None,
        "last_chunk_s": arrivals[-1] if arrivals else None,
        "usage": usage,
        "finish_reason": finish_reason,
        "openai": openai.__version__,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
