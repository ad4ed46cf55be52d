"""The OpenAI chat-completions wire format of ``alignpro serve``: request parsing, the rewrite header, completion
bodies, SSE chunks and error bodies. Pure functions of JSON, no HTTP framework."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, AsyncIterator
from urllib.parse import quote

REWRITE_HEADER = "X-AlignPro-Rewrite"
HEADER_LIMIT = 4000  #: characters of the percent-encoded rewrite put in the header (the body has all of it)
_HEADER_SAFE = " !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~"  #: kept readable; '%', controls, non-ASCII are escaped


class RequestError(Exception):
    """An error answered to the client as ``{"error": {"message", "type"}}`` with ``status``."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None
                 ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type_, param


def content_text(content: Any) -> str | None:
    """A message's text: a string, or the text parts of a content list; None when it is neither."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if all(isinstance(p, str) for p in parts):
            return "\n".join(parts)  # type: ignore[arg-type]
    return None


def parse_chat_request(raw: bytes) -> tuple[dict[str, Any], int, str]:
    """(body, index of the last user message, its text) or a 400 :class:`RequestError` naming the problem."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise RequestError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError(400, f"request body must be a JSON object, got {type(body).__name__}")
    messages = body.get("messages")
    if messages is None:
        raise RequestError(400, "missing required field 'messages' (a list of {role, content} objects)")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty list of {role, content} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RequestError(400, f"messages[{i}] must be an object with a string 'role'")
    user = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not user:
        raise RequestError(400, "'messages' has no message with role 'user'; Align-Pro rewrites the last one")
    field = f"messages[{user[-1]}].content"
    text = content_text(messages[user[-1]].get("content"))
    if text is None:
        raise RequestError(400, f"{field} must be a string or a list of text parts", param=field)
    if not text.strip():
        raise RequestError(400, f"{field} is empty: the last user message is the prompt Align-Pro rewrites, so it "
                                "must hold some text", param=field)
    if "stream" in body and not isinstance(body["stream"], bool):
        raise RequestError(400, f"'stream' must be true or false, got {body['stream']!r}")
    return body, user[-1], text


def rewrite_header(text: str) -> dict[str, str]:
    """``X-AlignPro-Rewrite``: the rewrite percent-encoded (printable ASCII stays readable), cut if too long."""
    whole = quote(text, safe=_HEADER_SAFE)
    if len(whole) <= HEADER_LIMIT:
        return {REWRITE_HEADER: whole}
    parts, size = [], 0
    for ch in text:  # encode character by character, so a cut never splits a character's escapes
        enc = quote(ch, safe=_HEADER_SAFE)
        if size + len(enc) > HEADER_LIMIT:
            return {REWRITE_HEADER: "".join(parts), f"{REWRITE_HEADER}-Truncated": "1"}
        parts.append(enc)
        size += len(enc)
    return {REWRITE_HEADER: "".join(parts)}


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event: ``data: <JSON or [DONE]>`` and a blank line."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n".encode()


def error_body(message: str, type_: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape; ``param`` names the request field at fault, if one is."""
    return {"error": {"message": message, "type": type_, "param": param, "code": None}}


def completion_body(model: str, text: str, n_tokens: int, audit: dict[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` with one choice, ``text``, and the audit record as the extra field ``alignpro``."""
    return {
        "id": f"chatcmpl-alignpro-{uuid.uuid4().hex[:16]}", "object": "chat.completion",
        "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": n_tokens, "total_tokens": n_tokens},
        "alignpro": audit,
    }


async def emulated_stream(completion: dict[str, Any]) -> AsyncIterator[bytes]:
    """A finished :func:`completion_body` as SSE chunks: role (with ``alignpro``), one chunk a word, stop, [DONE]."""
    base = {k: completion[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        return sse(base | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]} | extra)

    yield chunk({"role": "assistant", "content": ""}, alignpro=completion["alignpro"])
    words = completion["choices"][0]["message"]["content"].split(" ")
    for i, w in enumerate(words):
        yield chunk({"content": w if i == 0 else " " + w})
    yield chunk({}, "stop")
    yield sse("[DONE]")
