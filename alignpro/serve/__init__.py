"""``alignpro serve``: Align-Pro as an OpenAI-compatible proxy. ρ rewrites the last user message, π_F answers.

    client ──/v1/chat/completions──▶ serve ──(last user message x)──▶ prompter ρ ──▶ x′
                                       └──(conversation with x → x′)──▶ target π_F ──▶ answer ──▶ client

- Endpoints: ``POST /v1/chat/completions`` (JSON or ``"stream": true`` SSE), ``GET /v1/models``, ``GET /health``.
- Audit: every answer carries the rewrite, as the extra field ``alignpro: {"original", "rewrite", "parsed"}`` (in
  the first chunk when streaming) and as the header ``X-AlignPro-Rewrite`` (percent-encoded UTF-8; decode with
  ``urllib.parse.unquote``; cut at 4,000 characters, then ``X-AlignPro-Rewrite-Truncated: 1``).
- Batching: rewrites requested by concurrent clients are collected by a :class:`MicroBatcher` (up to
  ``max_batch`` prompts, waiting at most ``batch_wait_ms`` for more) and made in one ``prompter.rewrite`` call in a
  worker thread. Local targets are batched the same way.
- Targets: an ``openai:`` target receives the whole conversation (last user message replaced by x′) and every
  request field the client sent (temperature, max_tokens, seed, tools, ...); streaming passes through. Local
  targets (``smollm2``, ``hf:``, ``vllm:``, ``gguf:``, ``fake``) follow the Target protocol, which is single-turn:
  they answer x′ with the conversation's system messages and this server's generation settings, and a streamed
  answer is sent as SSE chunks once it is complete.
- Errors, always in OpenAI's ``{"error": {"message", "type", "param"}}`` shape: 400 malformed JSON / missing or
  bad ``messages`` / no user message / an empty last user message (``param`` names the field); 401 missing or wrong bearer key (when ``--api-key-env`` is set; ``/health`` is
  open); 429 the target's budget is spent; 502 target unreachable or failing (an ``openai:`` target's own 4xx
  answers keep their status). The server keeps serving after any of them.
- Binds 127.0.0.1 by default; a non-loopback ``--host`` needs ``--api-key-env`` (or an explicit ``--allow-remote``).
  The port is bound before the models load: a port in use is one error (exit 2) at once.

Modules: :mod:`~alignpro.serve.protocol` (the request/response wire format), :mod:`~alignpro.serve.batching` (the
:class:`MicroBatcher`), :mod:`~alignpro.serve.app` (:class:`ServeConfig`, the service, the FastAPI app, ``main``).
"""

from alignpro.serve.app import AlignProService, ServeConfig, create_app, main
from alignpro.serve.batching import MicroBatcher
from alignpro.serve.protocol import HEADER_LIMIT, REWRITE_HEADER, RequestError, parse_chat_request, rewrite_header

__all__ = ["AlignProService", "HEADER_LIMIT", "MicroBatcher", "REWRITE_HEADER", "RequestError", "ServeConfig",
           "create_app", "main", "parse_chat_request", "rewrite_header"]
