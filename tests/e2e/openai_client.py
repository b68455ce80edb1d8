"""The `openai` client the e2e scripts drive, from their `BASE_URL MODEL PROMPT` arguments.

`connect()` returns `(openai, client, model, prompt)`, or None after saying the package is
missing (the scripts then exit 3, which the Rust side reports as such).
"""

import sys


def connect():
    try:
        import openai
    except ImportError as e:
        print(f"the openai Python package is missing ({e}); run scripts/install-test-deps",
              file=sys.stderr)
        return None
    base_url, model, prompt = sys.argv[1:4]
    # No retries: a retried request would hide a failed first attempt from the test.
    client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0, timeout=30.0)
    return openai, client, model, prompt
