"""The LLM judge's endpoint: its configuration (``--judge k=v,...``), the privacy guard, and chat completions
through the ``openai`` client with bounded concurrency and retries.

``--judge model=NAME,base_url=http://127.0.0.1:8000/v1[,api_key_env=VAR,concurrency=4,max_retries=5,timeout=120,
backoff=1,max_backoff=60,max_tokens=512,price_input=USD,price_output=USD,allow_remote=true]`` — any
OpenAI-compatible server (vLLM, llama.cpp server, Ollama, SGLang, the OpenAI API). Temperature is always 0.

- The key comes from the environment variable ``api_key_env`` (default ``OPENAI_API_KEY``; a loopback server may
  need none); it is never an option, so it never reaches results, scores, cache keys, logs or error messages.
- Privacy: a base URL whose host is not a loopback address is refused unless ``allow_remote=true`` (the CLI's
  ``--allow-remote-judge``): the judge sends every reference and generated report to the endpoint, and
  credentialed data (MIMIC-CXR, CheXpert) must not be sent to third-party services.
- Retries: 429, 408, 409, 5xx, timeouts and malformed bodies are retried ``max_retries`` times with exponential
  backoff and full jitter (``backoff`` seconds doubling up to ``max_backoff``; ``Retry-After`` honoured up to
  ``max_wait``). A request still failing after that is one judge failure (reported, excluded from the
  aggregates); a connection that cannot be made, or another 4xx answer (bad key, unknown model), stops scoring
  with one clear message.
- ``price_input`` / ``price_output``: USD per million prompt / completion tokens; with them the cost of the
  tokens spent is reported.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bench.endpoint import (
    Endpoint,
    RetryableError,
    api_key_from_env,
    call_with_retries,
    coerce_option,
    parse_endpoint,
    retry_after_seconds,
    retryable_status,
)
from bench.interfaces import BenchError

WHO = "judge"
TOKEN_PARAMS = ("max_tokens", "max_completion_tokens")
log = logging.getLogger("medvlbench.judge")

# option -> (type, default)
OPTIONS: dict[str, tuple[type, Any]] = {
    "model": (str, None),
    "base_url": (str, None),
    "api_key_env": (str, "OPENAI_API_KEY"),
    "allow_remote": (bool, False),
    "concurrency": (int, 4),
    "max_retries": (int, 5),
    "timeout": (float, 120.0),
    "backoff": (float, 1.0),
    "max_backoff": (float, 60.0),
    "max_wait": (float, 300.0),
    "max_tokens": (int, 512),
    "max_tokens_param": (str, "max_tokens"),
    "price_input": (float, None),
    "price_output": (float, None),
}

REMOTE_REFUSED = (
    "judge: base_url {url} is not a loopback address (127.0.0.0/8, ::1, localhost), and the judge sends every "
    "reference and generated report to it. Credentialed data such as MIMIC-CXR (PhysioNet credentialed data use "
    "agreement) or CheXpert (Stanford research use agreement) must not be sent to third-party services. If the "
    "endpoint is yours, or the reports may be shared (synthcxr), pass --allow-remote-judge (or allow_remote=true "
    "in --judge)."
)


def _accepted() -> str:
    return ", ".join(OPTIONS)


@dataclass(frozen=True)
class JudgeConfig:
    model: str
    endpoint: Endpoint
    api_key_env: str
    key_env_explicit: bool
    allow_remote: bool
    concurrency: int
    max_retries: int
    timeout: float
    backoff: float
    max_backoff: float
    max_wait: float
    max_tokens: int
    max_tokens_param: str
    price_input: float | None
    price_output: float | None

    @classmethod
    def from_options(cls, options: Mapping[str, Any], allow_remote: bool = False) -> JudgeConfig:
        """Validate ``--judge`` options (``allow_remote`` also from ``--allow-remote-judge``); one BenchError
        naming what was wrong, raised before any work starts."""
        if "api_key" in options or "key" in options:
            raise BenchError(
                f"{WHO}: the API key is never a --judge value (it would be recorded): put it in OPENAI_API_KEY, "
                "or in another environment variable named by api_key_env=NAME"
            )
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise BenchError(f"{WHO}: unknown option(s) {', '.join(unknown)}; accepted: {_accepted()}")
        v = {
            name: coerce_option(WHO, name, kind, default, options.get(name))
            for name, (kind, default) in OPTIONS.items()
        }
        if not v["model"] or not v["base_url"]:
            raise BenchError(
                f"{WHO}: give the judge's model id and endpoint, e.g. "
                f"--judge model=NAME,base_url=http://127.0.0.1:8000/v1 (accepted: {_accepted()})"
            )
        endpoint = parse_endpoint(v["base_url"], WHO)
        remote_ok = bool(v["allow_remote"] or allow_remote)
        if not endpoint.loopback and not remote_ok:
            scheme = endpoint.base_url.split("://", 1)[0]
            raise BenchError(REMOTE_REFUSED.format(url=f"{scheme}://{endpoint.host}"))
        for name, low in (("concurrency", 1), ("max_retries", 0), ("max_tokens", 1)):
            if v[name] < low:
                raise BenchError(f"{WHO}: {name} must be at least {low}, got {v[name]}")
        for name in ("timeout", "backoff", "max_backoff", "max_wait"):
            if not v[name] > 0:
                raise BenchError(f"{WHO}: {name} must be a positive number of seconds, got {v[name]}")
        for name in ("price_input", "price_output"):
            if v[name] is not None and v[name] < 0:
                raise BenchError(f"{WHO}: {name} (USD per million tokens) must not be negative, got {v[name]}")
        if v["max_tokens_param"] not in TOKEN_PARAMS:
            raise BenchError(f"{WHO}: max_tokens_param must be one of {', '.join(TOKEN_PARAMS)}")
        return cls(
            model=v["model"],
            endpoint=endpoint,
            api_key_env=v["api_key_env"],
            key_env_explicit="api_key_env" in options,
            allow_remote=remote_ok,
            concurrency=v["concurrency"],
            max_retries=v["max_retries"],
            timeout=v["timeout"],
            backoff=v["backoff"],
            max_backoff=v["max_backoff"],
            max_wait=v["max_wait"],
            max_tokens=v["max_tokens"],
            max_tokens_param=v["max_tokens_param"],
            price_input=v["price_input"],
            price_output=v["price_output"],
        )

    def read_key(self) -> str | None:
        return api_key_from_env(self.api_key_env, self.key_env_explicit, self.endpoint.loopback, WHO)

    @property
    def prices(self) -> tuple[float, float] | None:
        if self.price_input is None and self.price_output is None:
            return None
        return (self.price_input or 0.0, self.price_output or 0.0)

    def describe(self) -> dict[str, Any]:
        """What results record about the judge (never the key)."""
        out: dict[str, Any] = {
            "model": self.model,
            "host": self.endpoint.host,
            "remote": not self.endpoint.loopback,
            "api_key_env": self.api_key_env,
            "max_tokens": self.max_tokens,
        }
        if self.prices is not None:
            out["prices_usd_per_million_tokens"] = {"input": self.prices[0], "output": self.prices[1]}
        return out


# --------------------------------------------------------------------------- replies


@dataclass
class Reply:
    """One completion: its text, or ``error`` when the request failed after every retry."""

    text: str | None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None


def _message_of(exc: Any) -> str:
    body = getattr(exc, "body", None)
    msg = None
    if isinstance(body, Mapping):
        err = body.get("error", body)
        msg = err.get("message") if isinstance(err, Mapping) else err
    text = " ".join(str(msg if msg is not None else getattr(exc, "message", exc)).split())
    return text[:300]


class OpenAIJudgeClient:
    """Chat completions from the judge's endpoint with the ``openai`` package (its own retries off: ours are
    configurable and counted)."""

    def __init__(self, config: JudgeConfig) -> None:
        self.config = config
        self._key = config.read_key()
        self._client: Any = None
        self._lock = threading.Lock()
        self._abort = threading.Event()
        self.stats: Counter[str] = Counter()  # requests, retries, retry:<reason>, failed_requests

    def __repr__(self) -> str:
        return f"OpenAIJudgeClient(model={self.config.model!r}, host={self.config.endpoint.host!r})"

    def describe(self) -> dict[str, Any]:
        return self.config.describe()

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _openai(self) -> Any:
        with self._lock:
            if self._client is None:
                import openai

                c = self.config
                self._client = openai.OpenAI(
                    api_key=self._key or "not-set",  # the package insists on one; a local server ignores it
                    base_url=c.endpoint.base_url,
                    max_retries=0,
                    timeout=c.timeout,
                    http_client=openai.DefaultHttpxClient(trust_env=not c.endpoint.loopback),
                )
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _count(self, *keys: str) -> None:
        with self._lock:
            for k in keys:
                self.stats[k] += 1

    def _attempt(self, messages: Sequence[Mapping[str, str]]) -> Reply:
        import openai

        c = self.config
        if self._abort.is_set():
            raise BenchError(f"{WHO}: request abandoned (another request failed)")
        self._count("requests")
        try:
            response = self._openai().chat.completions.create(
                model=c.model,
                messages=list(messages),
                temperature=0.0,
                **{c.max_tokens_param: c.max_tokens},
            )
        except openai.APITimeoutError:
            raise RetryableError("timeout", f"no answer within {c.timeout:g} s") from None
        except openai.APIConnectionError as exc:
            raise RetryableError("connection", f"connection error ({_message_of(exc)})") from None
        except openai.APIStatusError as exc:
            status = exc.status_code
            detail = f"HTTP {status}: {_message_of(exc)}"
            if retryable_status(status):
                reason = str(status) if status < 500 else "5xx"
                raise RetryableError(reason, detail, retry_after_seconds(exc.response.headers)) from None
            hint = f" (check the key in {c.api_key_env})" if status in (401, 403) else ""
            raise BenchError(self._redact(f"{WHO}: {c.endpoint.chat_url} answered {detail}{hint}")) from None
        except (openai.APIResponseValidationError, ValueError) as exc:
            raise RetryableError("malformed", f"malformed response body ({type(exc).__name__})") from None
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or not choices or getattr(choices[0], "message", None) is None:
            raise RetryableError("malformed", "malformed response body (no choices[0].message)")
        text = choices[0].message.content
        usage = getattr(response, "usage", None)
        return Reply(
            text=text if isinstance(text, str) else "",
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None),
        )

    def complete(self, messages: Sequence[Mapping[str, str]]) -> Reply:
        """One completion with retries; a Reply with ``error`` when every attempt failed."""
        c = self.config

        def on_retry(exc: BaseException | None, attempt: int, delay: float) -> None:
            reason = exc.reason if isinstance(exc, RetryableError) else "error"
            self._count("retries", f"retry:{reason}")
            log.warning(
                self._redact(f"{WHO}: {c.endpoint.host}: {exc}; retry {attempt}/{c.max_retries} in {delay:.2f} s")
            )

        try:
            return call_with_retries(
                self._attempt,
                messages,
                max_retries=c.max_retries,
                backoff=c.backoff,
                max_backoff=c.max_backoff,
                max_wait=c.max_wait,
                on_retry=on_retry,
            )
        except RetryableError as exc:
            self._count("failed_requests")
            if exc.reason == "connection":
                raise BenchError(
                    self._redact(
                        f"{WHO}: {c.endpoint.chat_url} failed after {c.max_retries + 1} attempt(s): {exc.detail} "
                        "(is the server running?)"
                    )
                ) from None
            return Reply(text=None, error=self._redact(f"failed after {c.max_retries + 1} attempt(s): {exc.detail}"))

    def complete_many(self, conversations: Sequence[Sequence[Mapping[str, str]]]) -> list[Reply]:
        """Completions of several conversations on at most ``concurrency`` threads, in order."""
        conversations = list(conversations)
        workers = min(self.config.concurrency, len(conversations))
        self._abort.clear()
        if workers <= 1:
            return [self.complete(m) for m in conversations]
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="judge")
        try:
            futures = [pool.submit(self.complete, m) for m in conversations]
            return [f.result() for f in futures]
        except BaseException:
            self._abort.set()  # requests still retrying give up at their next attempt
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["OPTIONS", "JudgeConfig", "OpenAIJudgeClient", "Reply"]
