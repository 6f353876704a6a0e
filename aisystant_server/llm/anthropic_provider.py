"""Claude through the official `anthropic` SDK.

The SDK's own retries are off (`max_retries=0`): the reply job retries with one policy
for every provider, bounded so it ends well inside the job's timeout. The read timeout
is the longest silence tolerated from the upstream, before the first token or between
two; a stalled stream surfaces as httpx's ReadTimeout, unwrapped (the SDK wraps it as
its own APITimeoutError from 2.17 on), and both are classified here alike.
"""

import anthropic
import httpx2
import orjson

from aisystant_server.llm import Completion, ModelError, Provider

RETRYABLE_STATUSES = {408, 409, 429, 500, 502, 503, 504, 529}


class AnthropicProvider(Provider):
    name = "anthropic"

    def __init__(self, *, api_key, base_url, model, idle_timeout):
        self.model = model
        self.client = anthropic.Anthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=httpx2.Timeout(connect=10.0, read=idle_timeout, write=30.0, pool=30.0),
        )

    def stream(self, *, system, messages, max_tokens, on_text):
        # The SDK sends the request (auth, headers, errors before the stream), but the
        # event stream is read here: the SDK builds a pydantic object for every event,
        # which was most of a busy worker's CPU, where a reply needs three fields.
        completion = Completion(text="", model=self.model, stop_reason=None)
        parts = []
        try:
            with self.client.messages.with_streaming_response.create(
                    model=self.model, system=system, messages=messages, max_tokens=max_tokens,
                    stream=True) as response:
                for event, data in _server_sent_events(response.iter_bytes()):
                    if event == "content_block_delta":
                        delta = data["delta"]
                        if delta.get("type") == "text_delta":
                            parts.append(delta["text"])
                            on_text(delta["text"])
                    elif event == "message_start":
                        completion.model = data["message"].get("model", self.model)
                        completion.input_tokens = data["message"].get("usage", {}).get("input_tokens", 0)
                    elif event == "message_delta":
                        completion.stop_reason = data["delta"].get("stop_reason")
                        completion.output_tokens = data.get("usage", {}).get("output_tokens", 0)
                    elif event == "error":
                        # An error inside a stream that had started (e.g. overloaded_error).
                        error = data.get("error") or {}
                        raise ModelError(error.get("type") or "stream_error", error.get("message", "stream error"),
                                         retryable=True, status=200)
        except (anthropic.APIError, httpx2.HTTPError) as error:
            raise classify(error) from error
        completion.text = "".join(parts)
        return completion

    def complete(self, *, system, messages, max_tokens):
        try:
            final = self.client.messages.create(
                model=self.model, system=system, messages=messages, max_tokens=max_tokens
            )
        except (anthropic.APIError, httpx2.HTTPError) as error:
            raise classify(error) from error
        return _completion(final)


def _server_sent_events(chunks):
    """(event name, decoded data) of each event of a Messages API stream (`ping`s skipped),
    from the body's bytes: one split per chunk rather than a decoder call per line."""
    pending = b""
    for chunk in chunks:
        pending = (pending + chunk).replace(b"\r\n", b"\n")
        *blocks, pending = pending.split(b"\n\n")
        for block in blocks:
            event, data = None, []
            for line in block.split(b"\n"):
                field, _, value = line.partition(b":")
                if field == b"event":
                    event = value.strip().decode()
                elif field == b"data":
                    data.append(value[1:] if value.startswith(b" ") else value)
            if event is not None and event != "ping":
                yield event, orjson.loads(b"\n".join(data))


def _completion(message):
    text = "".join(block.text for block in message.content if getattr(block, "type", None) == "text")
    return Completion(text=text, model=message.model, stop_reason=message.stop_reason,
                      input_tokens=message.usage.input_tokens, output_tokens=message.usage.output_tokens)


def classify(error):
    if isinstance(error, (anthropic.APITimeoutError, httpx2.TimeoutException)):
        return ModelError("timeout", "the model did not answer in time", retryable=True)
    if isinstance(error, (anthropic.APIConnectionError, httpx2.TransportError)):
        return ModelError("connection", "the model could not be reached", retryable=True)
    if isinstance(error, anthropic.APIStatusError):
        status = error.status_code
        if status == 200:
            # An `error` event inside a stream that had started: the SDK does not retry it.
            return ModelError(getattr(error, "type", None) or "stream_error", error.message, retryable=True,
                              status=status)
        return ModelError(f"http_{status}", error.message, retryable=status in RETRYABLE_STATUSES,
                          retry_after=_retry_after(error.response), status=status)
    return ModelError("model_error", str(error))


def _retry_after(response):
    try:
        return max(0.0, float(response.headers.get("retry-after")))
    except (TypeError, ValueError, AttributeError):
        return None
