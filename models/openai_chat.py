"""``openai``: any OpenAI-compatible chat endpoint (``POST {base_url}/chat/completions``).

``bench run --model openai --model-args model=NAME,base_url=http://127.0.0.1:8000/v1 --task vqarad_vqa``
evaluates a model served by vLLM, SGLang, TGI, Ollama, LM Studio or the OpenAI API itself. Images go
into the user message as PNG data URLs (``data:image/png;base64,...``) before the prompt text;
temperature, top_p and the token limit come from each :class:`~bench.interfaces.GenerationRequest`.

The key is read from the environment (``OPENAI_API_KEY``, or the variable named by
``api_key_env=NAME``); it is never an argument, so it never reaches results.json, logs, cache keys or
error messages (any text shown to the user is scrubbed of it).

Privacy guard (:mod:`bench.endpoint`, shared with the LLM judge): an endpoint whose host is not a loopback
address (127.0.0.0/8, ::1, localhost, or a name resolving to loopback addresses only) is refused unless
``allow_remote=true``: credentialed datasets (MIMIC-CXR under the PhysioNet credentialed data use
agreement, CheXpert under the Stanford research use agreement) may not be sent to third-party services.

Requests run on ``concurrency`` threads. 429, 408, 409, 5xx, timeouts, connection errors and malformed
bodies are retried ``max_retries`` times with exponential backoff and full jitter (``backoff`` seconds
doubling up to ``max_backoff``); a ``Retry-After`` / ``retry-after-ms`` header is honoured (capped at
``max_wait``). Other 4xx answers fail at once with the server's message; every failure is one BenchError.

Fingerprint (the prediction-cache key) = model id + endpoint host, port and path + ``seed``: neither the
key nor concurrency/retry settings change answers, so changing them reuses the cache.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bench.endpoint import (
    RetryableError,
    api_key_from_env,
    call_with_retries,
    coerce_option,
    is_loopback,
    parse_endpoint,
    retry_after_seconds,
    retryable_status,
)
from bench.interfaces import GENERATE, BenchError, GenerationRequest, ModelAdapter, as_pil, stable_hash

MODEL_NAME = "openai"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
TOKEN_PARAMS = ("max_tokens", "max_completion_tokens")
FINGERPRINT_VERSION = 1

log = logging.getLogger("medvlbench.openai")

# argument -> (type, default); ``device`` is passed by the runner and ignored (the model runs remotely)
ARGS: dict[str, tuple[type, Any]] = {
    "model": (str, None),
    "base_url": (str, DEFAULT_BASE_URL),
    "api_key_env": (str, DEFAULT_KEY_ENV),
    "allow_remote": (bool, False),
    "concurrency": (int, 4),
    "max_retries": (int, 5),
    "timeout": (float, 120.0),
    "backoff": (float, 1.0),
    "max_backoff": (float, 60.0),
    "max_wait": (float, 300.0),
    "seed": (int, None),
    "max_tokens_param": (str, "max_tokens"),
    "device": (str, None),
}

REMOTE_REFUSED = (
    "model openai: base_url {url} is not a loopback address (127.0.0.0/8, ::1, localhost), and medvlbench "
    "sends images and report text to it. Credentialed data (MIMIC-CXR under the PhysioNet credentialed data "
    "use agreement, CheXpert under the Stanford research use agreement) may not be sent to third-party "
    "services. If the endpoint is yours, or the task's data may be shared (synthcxr, public VQA sets), pass "
    "allow_remote=true in --model-args."
)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    model: str
    base_url: str
    host: str
    endpoint: str  # host[:port]/path: what identifies the server in the fingerprint
    loopback: bool
    api_key_env: str
    key_env_explicit: bool
    allow_remote: bool
    concurrency: int
    max_retries: int
    timeout: float
    backoff: float
    max_backoff: float
    max_wait: float
    seed: int | None
    max_tokens_param: str

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"


def _accepted() -> str:
    return ", ".join(a for a in ARGS if a != "device")


def _coerce(name: str, value: Any) -> Any:
    kind, default = ARGS[name]
    return coerce_option(f"model {MODEL_NAME}", name, kind, default, value)


def parse_settings(args: Mapping[str, Any]) -> Settings:
    """Validate ``--model-args``; one BenchError naming the accepted arguments for anything wrong."""
    if "api_key" in args or "key" in args:
        raise BenchError(
            f"model {MODEL_NAME}: the API key is never a --model-args value (it would be recorded in "
            "results.json): put it in OPENAI_API_KEY, or in another environment variable named by api_key_env=NAME"
        )
    unknown = sorted(set(args) - set(ARGS))
    if unknown:
        raise BenchError(f"model {MODEL_NAME}: unknown argument(s) {', '.join(unknown)}; accepted: {_accepted()}")
    v = {name: _coerce(name, args.get(name)) for name in ARGS}
    if not v["model"]:
        raise BenchError(
            f"model {MODEL_NAME}: give the endpoint's model id, e.g. --model-args model=NAME,base_url=URL "
            f"(accepted: {_accepted()})"
        )
    ep = parse_endpoint(v["base_url"], f"model {MODEL_NAME}")
    if not ep.loopback and not v["allow_remote"]:
        scheme = ep.base_url.split("://", 1)[0]
        raise BenchError(REMOTE_REFUSED.format(url=f"{scheme}://{ep.host}"))
    for name, low in (("concurrency", 1), ("max_retries", 0)):
        if v[name] < low:
            raise BenchError(f"model {MODEL_NAME}: {name} must be at least {low}, got {v[name]}")
    for name in ("timeout", "backoff", "max_backoff", "max_wait"):
        if not v[name] > 0:
            raise BenchError(f"model {MODEL_NAME}: {name} must be a positive number of seconds, got {v[name]}")
    if v["max_tokens_param"] not in TOKEN_PARAMS:
        raise BenchError(f"model {MODEL_NAME}: max_tokens_param must be one of {', '.join(TOKEN_PARAMS)}")
    return Settings(
        model=v["model"],
        base_url=ep.base_url,
        host=ep.host,
        endpoint=ep.endpoint,
        loopback=ep.loopback,
        api_key_env=v["api_key_env"],
        key_env_explicit="api_key_env" in args,
        allow_remote=v["allow_remote"],
        concurrency=v["concurrency"],
        max_retries=v["max_retries"],
        timeout=v["timeout"],
        backoff=v["backoff"],
        max_backoff=v["max_backoff"],
        max_wait=v["max_wait"],
        seed=v["seed"],
        max_tokens_param=v["max_tokens_param"],
    )


def settings_fingerprint(s: Settings) -> str:
    identity = {"adapter": MODEL_NAME, "version": FINGERPRINT_VERSION, "model": s.model, "endpoint": s.endpoint}
    return stable_hash({**identity, "seed": s.seed})


def quick_fingerprint(args: Mapping[str, Any]) -> str:
    """The fingerprint from the arguments alone (the runner then skips building a fully cached model)."""
    return settings_fingerprint(parse_settings(args))


# --------------------------------------------------------------------------- request / response


def image_data_url(image: Any) -> str:
    """A PNG data URL of an ImageRef / path / PIL image (16-bit and float images rescaled to 8 bits)."""
    import numpy as np
    from PIL import Image

    im = as_pil(image)
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        im = Image.fromarray(arr.round().astype(np.uint8), mode="L")
    elif im.mode not in ("L", "RGB", "RGBA", "LA"):
        im = im.convert("RGB")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def request_body(settings: Settings, request: GenerationRequest) -> dict[str, Any]:
    content: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": image_data_url(im)}} for im in request.images
    ]
    content.append({"type": "text", "text": request.prompt})
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    messages.append({"role": "user", "content": content})
    body: dict[str, Any] = {
        "model": settings.model,
        "messages": messages,
        "temperature": request.temperature,
        "top_p": request.top_p,
        settings.max_tokens_param: request.max_new_tokens,
    }
    if settings.seed is not None:
        body["seed"] = settings.seed
    return body


def completion_text(raw: bytes) -> str:
    """The first choice's text of a chat-completion body; ValueError when the body is not one."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError("the body is not JSON") from None
    try:
        message = data["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        raise ValueError("no choices[0].message in the body") from None
    if not isinstance(message, Mapping):
        raise ValueError("choices[0].message is not an object")
    content = message.get("content")
    if content is None:  # a refusal or a tool call: no answer text
        refusal = message.get("refusal")
        return refusal if isinstance(refusal, str) else ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    raise ValueError("choices[0].message.content is neither text nor a list of parts")


# --------------------------------------------------------------------------- the adapter


class OpenAIChat(ModelAdapter):
    name = MODEL_NAME
    capabilities = frozenset({GENERATE})

    def __init__(self, **kwargs: Any) -> None:
        self.settings = parse_settings(kwargs)
        super().__init__(**{k: v for k, v in kwargs.items() if k != "device"})
        self._key = self._read_key()
        self._client: Any = None
        self._lock = threading.Lock()
        self._abort = threading.Event()
        self.stats: Counter[str] = Counter()  # requests, retries, retry:<reason>, answers

    def _read_key(self) -> str | None:
        s = self.settings
        return api_key_from_env(s.api_key_env, s.key_env_explicit, s.loopback, f"model {MODEL_NAME}")

    def __repr__(self) -> str:
        return f"OpenAIChat(model={self.settings.model!r}, endpoint={self.settings.endpoint!r})"

    def fingerprint(self) -> str:
        return settings_fingerprint(self.settings)

    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {
            "kind": "OpenAI-compatible chat API",
            "model": s.model,
            "endpoint": s.base_url,
            "remote": not s.loopback,
            "seed": s.seed,
            "concurrency": s.concurrency,
            "max_retries": s.max_retries,
            "timeout_s": s.timeout,
            "device": f"remote API at {s.host}",
        }

    # ------------------------------------------------------------------ HTTP

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _http(self) -> Any:
        with self._lock:
            if self._client is None:
                import httpx2

                s = self.settings
                headers = {"Content-Type": "application/json", "User-Agent": "medvlbench"}
                if self._key:
                    headers["Authorization"] = f"Bearer {self._key}"
                self._client = httpx2.Client(
                    headers=headers,
                    timeout=httpx2.Timeout(s.timeout),
                    limits=httpx2.Limits(max_connections=s.concurrency, max_keepalive_connections=s.concurrency),
                    trust_env=not s.loopback,  # never route a local server through an HTTP proxy
                    follow_redirects=False,
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

    def _attempt(self, body: bytes) -> str:
        import httpx2

        s = self.settings
        if self._abort.is_set():
            raise BenchError(f"model {MODEL_NAME}: request abandoned (another request of the batch failed)")
        self._count("requests")
        try:
            resp = self._http().post(s.url, content=body)
        except httpx2.TimeoutException:
            raise RetryableError("timeout", f"no answer within {s.timeout:g} s") from None
        except httpx2.TransportError as exc:
            raise RetryableError("connection", f"connection error ({type(exc).__name__}: {exc})") from None
        status = resp.status_code
        if retryable_status(status):
            reason = str(status) if status < 500 else "5xx"
            raise RetryableError(reason, f"HTTP {status}{_detail(resp)}", retry_after_seconds(resp.headers))
        if status != 200:
            hint = f" (check the key in {s.api_key_env})" if status in (401, 403) else ""
            raise BenchError(self._redact(f"model {MODEL_NAME}: {s.url} answered HTTP {status}{_detail(resp)}{hint}"))
        try:
            return completion_text(resp.content)
        except ValueError as exc:
            raise RetryableError("malformed", f"malformed response body: {exc}") from None

    def complete(self, request: GenerationRequest) -> str:
        """One request, with retries; BenchError when it cannot succeed."""
        s = self.settings
        body = json.dumps(request_body(s, request)).encode()

        def on_retry(exc: BaseException | None, attempt: int, delay: float) -> None:
            reason = exc.reason if isinstance(exc, RetryableError) else "error"
            self._count("retries", f"retry:{reason}")
            log.warning(
                self._redact(
                    f"openai: {s.host}: {exc} (sample {request.sample_id or '?'}); "
                    f"retry {attempt}/{s.max_retries} in {delay:.2f} s"
                )
            )

        try:
            text = call_with_retries(
                self._attempt,
                body,
                max_retries=s.max_retries,
                backoff=s.backoff,
                max_backoff=s.max_backoff,
                max_wait=s.max_wait,
                on_retry=on_retry,
            )
        except RetryableError as exc:
            self._count("failures")
            raise BenchError(
                self._redact(
                    f"model {MODEL_NAME}: {s.url} failed after {s.max_retries + 1} attempt(s): {exc.detail}"
                    + (" (is the server running?)" if exc.reason == "connection" else "")
                )
            ) from None
        self._count("answers")
        return text

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        requests = list(requests)
        workers = min(self.settings.concurrency, len(requests))
        self._abort.clear()
        if workers <= 1:
            return [self.complete(r) for r in requests]
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai")
        try:
            futures = [pool.submit(self.complete, r) for r in requests]
            return [f.result() for f in futures]
        except BaseException:
            self._abort.set()  # the batch has failed: requests still retrying give up at their next attempt
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _detail(resp: Any) -> str:
    """The server's error message (or the start of its body), for an error line."""
    try:
        data = json.loads(resp.content)
        err = data.get("error") if isinstance(data, Mapping) else None
        msg = err.get("message") if isinstance(err, Mapping) else err if isinstance(err, str) else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        msg = None
    if msg is None:
        msg = resp.content[:200].decode("utf-8", "replace").strip()
    msg = " ".join(str(msg).split())[:300]
    return f": {msg}" if msg else ""


__all__ = ["OpenAIChat", "Settings", "is_loopback", "parse_settings", "quick_fingerprint", "retry_after_seconds"]
