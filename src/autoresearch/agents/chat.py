"""Chat backends over the official SDKs: OpenAI-compatible servers and Anthropic's Messages API.

Both take the API key from an environment variable whose *name* is configured; the key itself is
never stored in the ledger, the logs or any message (it is scrubbed from error texts). The SDKs'
own retries are turned off and replaced by one policy: timeouts, refused connections, 408/409/429
and 5xx are retried with exponential backoff and jitter (a server's Retry-After is honoured, up to
the cap); other errors (bad key, unknown model, bad request) fail at once. A backend that keeps
failing raises `ChatError` with what happened, which the agent turns into a clear stop.

The SDKs are imported when a backend is created, so `import autoresearch` does not need them.
"""
from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from autoresearch.core.errors import AutoresearchError
from autoresearch.core.loopback import is_loopback

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
LOCAL_PLACEHOLDER_KEY = "sk-no-key-required"  # local servers ignore the key, the SDK wants one


class ChatError(AutoresearchError):
    """The model could not be reached or refused the request.

    `permanent` is True when retrying cannot help (bad key, unknown model, malformed request).
    """

    def __init__(self, message: str, *, attempts: int = 1, permanent: bool = False, status: int | None = None):
        super().__init__(message)
        self.attempts, self.permanent, self.status = attempts, permanent, status


@dataclass
class ChatResult:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float  # wall time of the successful call plus the failed attempts and backoff before it
    attempts: int = 1  # HTTP attempts, retries included
    finish_reason: str | None = None
    tokens_estimated: bool = False  # the server reported no usage; counts are estimates


@dataclass
class RetryPolicy:
    max_retries: int = 5  # retries after the first attempt
    backoff_s: float = 1.0  # first wait; doubles each retry
    max_backoff_s: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def wait_for(self, retry: int, retry_after: float | None = None) -> float:
        wait = min(self.max_backoff_s, self.backoff_s * (2 ** retry))
        wait *= 1.0 + 0.25 * random.random()  # jitter: many clients must not retry in lockstep
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_backoff_s))
        return min(wait, self.max_backoff_s)


def api_key_from_env(env_name: str | None, *, base_url: str | None, provider: str) -> str:
    """The key in the named environment variable; a placeholder for a loopback server without one."""
    key = os.environ.get(env_name, "") if env_name else ""
    if key:
        return key
    if is_loopback(base_url):
        return LOCAL_PLACEHOLDER_KEY
    if not env_name:
        raise ValueError(f"the {provider} agent needs api_key_env, the name of the environment variable "
                         "holding the API key")
    raise ValueError(f"the environment variable {env_name} (api_key_env) is not set: export the {provider} "
                     "API key in it, or point base_url at a local server")


class _Chat:
    """Shared retry loop; subclasses implement `_call` and `_classify`."""

    provider = "model"

    def __init__(self, model: str, *, retry: RetryPolicy, key: str):
        if not model or not isinstance(model, str):
            raise ValueError(f"the {self.provider} agent needs a model name (model = \"...\")")
        self.model, self.retry, self._key = model, retry, key

    def complete(self, system: str, messages: list[dict[str, str]], *, max_tokens: int,
                 temperature: float | None = None, schema: dict[str, Any] | None = None,
                 seed: int | None = None) -> ChatResult:
        """One chat completion, retried per the policy. Raises ChatError when it gives up."""
        start = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                result = self._call(system, messages, max_tokens=max_tokens, temperature=temperature,
                                    schema=schema, seed=seed)
            except Exception as e:  # noqa: BLE001 - classified below; unknown errors re-raise
                retryable, status, retry_after = self._classify(e)
                if retryable is None:
                    raise
                message = self._scrub(f"{type(e).__name__}{f' (HTTP {status})' if status else ''}: {e}")
                if not retryable:
                    raise ChatError(f"{self.provider} request to model {self.model} failed: {message}",
                                       attempts=attempt, permanent=True, status=status) from None
                if attempt > self.retry.max_retries:
                    raise ChatError(f"{self.provider} model {self.model} still failing after {attempt} attempts "
                                       f"over {time.monotonic() - start:.0f}s; last error: {message}",
                                       attempts=attempt, status=status) from None
                self.retry.sleep(self.retry.wait_for(attempt - 1, retry_after))
                continue
            result.attempts = attempt
            result.latency_s = time.monotonic() - start
            return result

    def _call(self, system, messages, *, max_tokens, temperature, schema, seed) -> ChatResult:
        raise NotImplementedError

    _sdk: Any = None  # the vendor SDK module: both name their errors alike

    def _classify(self, e: Exception) -> tuple[bool | None, int | None, float | None]:
        """(retryable, HTTP status, Retry-After) of a vendor SDK's error; (None, ...) when it is not one."""
        sdk = self._sdk
        if isinstance(e, sdk.APIConnectionError):  # refused, reset, DNS, and timeouts (a subclass)
            return True, None, None
        if isinstance(e, sdk.APIStatusError):
            return e.status_code in RETRY_STATUS or e.status_code >= 500, e.status_code, _retry_after(e)
        if isinstance(e, sdk.APIResponseValidationError):
            return True, None, None
        return None, None, None

    def _scrub(self, text: str) -> str:
        if self._key and self._key != LOCAL_PLACEHOLDER_KEY and len(self._key) >= 8:
            text = text.replace(self._key, "***")
        return text[:2000]


def _retry_after(e: Exception) -> float | None:
    response = getattr(e, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _strip_keys(schema: Any, keys: set[str]) -> Any:
    if isinstance(schema, dict):
        return {k: _strip_keys(v, keys) for k, v in schema.items() if k not in keys}
    if isinstance(schema, list):
        return [_strip_keys(v, keys) for v in schema]
    return schema


def _estimate(text: str) -> int:
    return max(1, len(text) // 4)


class OpenAIChat(_Chat):
    """Chat Completions through the `openai` SDK: OpenAI, vLLM, Ollama, llama.cpp's servers...

    `structured`: None (plain text), "json_schema" (OpenAI's response_format), or "json_object"
    (`{"type": "json_object", "schema": ...}`, as llama-cpp-python's server takes it). A server
    that rejects json_schema is retried once with json_object, and that is remembered.
    """

    provider = "OpenAI-compatible"

    def __init__(self, model: str, *, base_url: str | None = None, api_key_env: str | None = "OPENAI_API_KEY",
                 timeout_s: float = 300.0, retry: RetryPolicy | None = None, structured: str | None = None,
                 extra_body: dict[str, Any] | None = None, system_as_user: bool = False):
        import openai

        self._openai = self._sdk = openai
        key = api_key_from_env(api_key_env, base_url=base_url, provider="OpenAI")
        super().__init__(model, retry=retry or RetryPolicy(), key=key)
        if structured not in (None, "json_schema", "json_object"):
            raise ValueError(f"structured_output {structured!r}: use true, \"json_schema\" or \"json_object\"")
        self.structured = structured
        self.base_url = base_url
        self.extra_body = dict(extra_body or {})
        self.system_as_user = bool(system_as_user)  # for chat formats that drop system messages (Gemma)
        self.client = openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout_s, max_retries=0)

    def _response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self.structured == "json_object":
            return {"type": "json_object", "schema": schema}
        # OpenAI's strict mode refuses some keywords (string lengths); the enums and structure stay.
        return {"type": "json_schema", "json_schema": {"name": "proposal", "schema": _strip_keys(
            schema, {"maxLength", "minLength"}), "strict": True}}

    def _call(self, system, messages, *, max_tokens, temperature, schema, seed) -> ChatResult:
        if self.system_as_user and messages:
            chat = [{"role": messages[0]["role"], "content": f"{system}\n\n{messages[0]['content']}"}, *messages[1:]]
        else:
            chat = [{"role": "system", "content": system}, *messages]
        kwargs: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens, "messages": chat}
        if temperature is not None:
            kwargs["temperature"] = temperature
        if seed is not None:
            kwargs["seed"] = seed
        if self.extra_body:
            kwargs["extra_body"] = self.extra_body
        if schema is not None and self.structured:
            kwargs["response_format"] = self._response_format(schema)
        try:
            response = self.client.chat.completions.create(**kwargs)
        except (self._openai.BadRequestError, self._openai.UnprocessableEntityError):
            if "response_format" not in kwargs or self.structured != "json_schema":
                raise
            self.structured = "json_object"  # e.g. llama-cpp-python: schema under json_object
            kwargs["response_format"] = self._response_format(schema)
            response = self.client.chat.completions.create(**kwargs)
        choice = response.choices[0] if response.choices else None
        text = (choice.message.content if choice and choice.message else None) or ""
        usage = response.usage
        estimated = usage is None
        return ChatResult(text=text, model=response.model or self.model,
                          prompt_tokens=usage.prompt_tokens if usage else _estimate(system + json.dumps(messages)),
                          completion_tokens=usage.completion_tokens if usage else _estimate(text),
                          latency_s=0.0, finish_reason=choice.finish_reason if choice else None,
                          tokens_estimated=estimated)


class AnthropicChat(_Chat):
    """The Messages API through the `anthropic` SDK. Structured output forces a tool call whose
    input schema is the reply schema (supported by every model with tool use)."""

    provider = "Anthropic"
    TOOL = "propose_experiment"

    def __init__(self, model: str, *, base_url: str | None = None, api_key_env: str | None = "ANTHROPIC_API_KEY",
                 timeout_s: float = 300.0, retry: RetryPolicy | None = None, structured: bool = False):
        import anthropic

        self._anthropic = self._sdk = anthropic
        key = api_key_from_env(api_key_env, base_url=base_url, provider="Anthropic")
        super().__init__(model, retry=retry or RetryPolicy(), key=key)
        self.structured = bool(structured)
        self.client = anthropic.Anthropic(api_key=key, base_url=base_url, timeout=timeout_s, max_retries=0)

    def _call(self, system, messages, *, max_tokens, temperature, schema, seed) -> ChatResult:
        kwargs: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens, "system": system,
                                  "messages": messages}
        if temperature is not None:
            kwargs["temperature"] = temperature
        if schema is not None and self.structured:
            kwargs["tools"] = [{"name": self.TOOL, "description": "Propose the next experiment.",
                                "input_schema": schema}]
            kwargs["tool_choice"] = {"type": "tool", "name": self.TOOL}
        response = self.client.messages.create(**kwargs)
        parts = []
        for block in response.content or []:
            if getattr(block, "type", None) == "tool_use":
                parts.append(json.dumps(block.input))
            elif getattr(block, "type", None) == "text":
                parts.append(block.text)
        text = "\n".join(parts)
        usage = response.usage
        return ChatResult(text=text, model=response.model or self.model,
                          prompt_tokens=usage.input_tokens if usage else _estimate(system + json.dumps(messages)),
                          completion_tokens=usage.output_tokens if usage else _estimate(text),
                          latency_s=0.0, finish_reason=response.stop_reason, tokens_estimated=usage is None)

