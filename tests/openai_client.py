"""Drives `respawn serve` with the official `openai` Python client, as users do.

The client's own retries are off (``max_retries=0``): every request must succeed on its first
attempt as the client sees it, whatever respawn does behind the proxy. tests/openai_client.rs runs
this script in the pinned venv made by scripts/openai-client-venv.sh and steers it through stdin,
one command a line, so that it can freeze or restart the model server between batches:

    batch LABEL COUNT CONCURRENCY   send COUNT chat completions (even: streamed, odd: not),
                                    COUNT at most CONCURRENCY at a time; print one JSON line
    resume MAX_TOKENS AFTER         stream one long chat completion (``ignore_eos``); print
                                    ``{"progress": AFTER}`` once AFTER pieces of text arrived (the
                                    caller then cuts the stream behind the proxy), and at its end
                                    one JSON line: the text the client iterated, the raw bytes'
                                    text before and after respawn's ``: respawn resumed`` comment,
                                    whether ``data: [DONE]`` arrived, and any exception
    quit                            exit 0

At start it lists the models (``GET /v1/models``) and prints ``{"ready": true, "model": ...}``.
Each batch line holds: label, ok, errors (a list of "kind: message" strings), the generations
that answered (``x-respawn-generation``), and the largest ``x-respawn-attempts`` seen.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True, help="respawn's address, e.g. http://127.0.0.1:8000")
    parser.add_argument("--max-tokens", type=int, default=16, help="max_tokens of every request")
    parser.add_argument("--timeout", type=float, default=120.0, help="client timeout per request, seconds")
    parser.add_argument("--model", default=None, help="model name (default: the first one /v1/models lists)")
    return parser.parse_args()


def emit(value: dict) -> None:
    print(json.dumps(value), flush=True)


def headers_of(raw) -> tuple[int | None, int]:
    generation = raw.headers.get("x-respawn-generation")
    attempts = raw.headers.get("x-respawn-attempts")
    return (int(generation) if generation else None, int(attempts) if attempts else 1)


def complete(client: openai.OpenAI, model: str, prompt: str, max_tokens: int) -> tuple[int | None, int]:
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
    )
    completion = raw.parse()
    if len(completion.choices) != 1:
        raise ValueError(f"expected one choice, got {len(completion.choices)}")
    choice = completion.choices[0]
    if choice.finish_reason not in ("stop", "length"):
        raise ValueError(f"unexpected finish_reason {choice.finish_reason!r}")
    if completion.usage is None or completion.usage.completion_tokens < 1:
        raise ValueError(f"no generated tokens in the usage: {completion.usage!r}")
    return headers_of(raw)


def stream(client: openai.OpenAI, model: str, prompt: str, max_tokens: int) -> tuple[int | None, int]:
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
    )
    chunks = 0
    finish_reason = None
    for chunk in raw.parse():
        for choice in chunk.choices:
            if choice.delta is not None and choice.delta.content:
                chunks += 1
            if choice.finish_reason is not None:
                finish_reason = choice.finish_reason
    if finish_reason not in ("stop", "length"):
        raise ValueError(f"the stream ended without a finish_reason (after {chunks} content chunks)")
    if chunks < 1:
        raise ValueError("the stream carried no content")
    return headers_of(raw)


class Tee(httpx.BaseTransport):
    """Passes requests to the real transport and keeps every byte of the answers' bodies, so
    that the test sees what arrived on the wire while the client parses it as usual."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.raw = bytearray()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        tee = self

        class Body(httpx.SyncByteStream):
            def __iter__(self):
                for chunk in response.stream:
                    tee.raw.extend(chunk)
                    yield chunk

            def close(self) -> None:
                response.close()

        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=Body(),
            extensions=response.extensions,
        )


def sse_text(raw: str) -> str:
    """The delta text carried by the data events of an event-stream body."""
    text = []
    for event in raw.split("\n\n"):
        for line in event.splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                try:
                    chunk = json.loads(line[len("data: "):])
                except ValueError:
                    continue
                for choice in chunk.get("choices") or []:
                    text.append((choice.get("delta") or {}).get("content") or "")
    return "".join(text)


def resume(base_url: str, model: str, max_tokens: int, after: int, timeout: float) -> None:
    tee = Tee()
    client = openai.OpenAI(
        base_url=base_url.rstrip("/") + "/v1",
        api_key="unused",
        max_retries=0,
        timeout=timeout,
        http_client=httpx.Client(transport=tee, timeout=timeout),
    )
    pieces = []
    finish_reason = None
    error = None
    try:
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        for chunk in stream:
            for choice in chunk.choices:
                if choice.delta is not None and choice.delta.content:
                    pieces.append(choice.delta.content)
                    if len(pieces) == after:
                        emit({"progress": after})
                if choice.finish_reason is not None:
                    finish_reason = choice.finish_reason
    except (openai.OpenAIError, httpx.HTTPError, ValueError) as err:
        error = f"{type(err).__name__}: {err}"
    raw = tee.raw.decode("utf-8", errors="replace")
    marker = raw.find(": respawn resumed")
    before, after_marker = (raw, "") if marker < 0 else (raw[:marker], raw[marker:])
    emit(
        {
            "error": error,
            "text": "".join(pieces),
            "pieces": len(pieces),
            "finish_reason": finish_reason,
            "prefix": sse_text(before),
            "continuation": sse_text(after_marker),
            "markers": raw.count(": respawn resumed"),
            "done": raw.count("data: [DONE]"),
            "error_events": raw.count("event: error"),
        }
    )


def one(client: openai.OpenAI, model: str, label: str, index: int, max_tokens: int) -> dict:
    prompt = f"{label} request {index}: say something short."
    try:
        if index % 2 == 0:
            generation, attempts = stream(client, model, prompt, max_tokens)
        else:
            generation, attempts = complete(client, model, prompt, max_tokens)
        return {"ok": True, "generation": generation, "attempts": attempts}
    except (openai.OpenAIError, httpx.HTTPError, ValueError) as err:
        return {"ok": False, "error": f"{type(err).__name__}: {err}"}


def batch(client: openai.OpenAI, model: str, label: str, count: int, concurrency: int, max_tokens: int) -> None:
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        results = list(pool.map(lambda i: one(client, model, label, i, max_tokens), range(count)))
    emit(
        {
            "label": label,
            "ok": sum(1 for r in results if r["ok"]),
            "errors": [r["error"] for r in results if not r["ok"]],
            "generations": sorted({r["generation"] for r in results if r["ok"] and r["generation"] is not None}),
            "max_attempts": max((r["attempts"] for r in results if r["ok"]), default=0),
        }
    )


def main() -> int:
    args = parse_args()
    client = openai.OpenAI(
        base_url=args.base_url.rstrip("/") + "/v1",
        api_key="unused",
        max_retries=0,
        timeout=args.timeout,
    )
    model = args.model or client.models.list().data[0].id
    emit({"ready": True, "model": model, "openai": openai.__version__})
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            return 0
        if words[0] == "resume" and len(words) == 3:
            resume(args.base_url, model, int(words[1]), int(words[2]), args.timeout)
            continue
        if words[0] == "batch" and len(words) == 4:
            batch(client, model, words[1], int(words[2]), int(words[3]), args.max_tokens)
            continue
        emit({"error": f"unknown command {line.strip()!r}"})
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
