"""OpenAI-compatible endpoints: base-URL validation, the loopback (privacy) test, the key from the environment,
and the retry rules shared by the ``openai`` model adapter and the LLM judge.

Privacy rule: medvlbench sends images and report text to an endpoint only when its host is a loopback address
(127.0.0.0/8, ::1, ``localhost``, or a name that resolves to loopback addresses only), unless the user says the
endpoint may be remote. Credentialed data (MIMIC-CXR, CheXpert) must not reach third-party services.
"""

from __future__ import annotations

import email.utils
import ipaddress
import os
import random
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bench.interfaces import BenchError

RETRY_STATUS = frozenset({408, 409, 429})  # plus every 5xx (the official client's rule)


def _ip_is_loopback(text: str) -> bool | None:
    """True/False for an IP literal, None for a host name."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address: 127.0.0.0/8, ::1 (or ::ffff:127.x), ``localhost`` / ``*.localhost``,
    or a name whose every resolved address is loopback. A name that does not resolve is not loopback."""
    host = host.strip().strip("[]").rstrip(".").lower()
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    literal = _ip_is_loopback(host)
    if literal is not None:
        return literal
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(_ip_is_loopback(str(a)) for a in addresses)


@dataclass(frozen=True)
class Endpoint:
    """A validated base URL: ``base_url`` (scheme://netloc/path), ``host`` (host[:port]), ``endpoint``
    (host[:port]/path: what identifies the server) and whether it is a loopback address."""

    base_url: str
    host: str
    endpoint: str
    loopback: bool

    @property
    def chat_url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"


def parse_endpoint(url: str, who: str, key_hint: str = "api_key_env=NAME") -> Endpoint:
    """Validate an http(s) base URL; one BenchError prefixed with ``who`` for anything wrong."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BenchError(f"{who}: base_url must be an http(s) URL such as http://127.0.0.1:8000/v1")
    if parts.username or parts.password:
        raise BenchError(
            f"{who}: base_url must not hold credentials (user:password@host): they would be recorded "
            f"in results.json; put the key in an environment variable ({key_hint})"
        )
    if parts.query or parts.fragment:
        raise BenchError(f"{who}: base_url must not have a query string or fragment")
    try:
        port = parts.port
    except ValueError:
        raise BenchError(f"{who}: base_url has an invalid port") from None
    host = parts.hostname.lower()
    host_port = f"[{host}]" if ":" in host else host
    if port is not None:
        host_port += f":{port}"
    return Endpoint(
        base_url=f"{parts.scheme}://{parts.netloc}{parts.path}",
        host=host_port,
        endpoint=host_port + (parts.path.rstrip("/") or ""),
        loopback=is_loopback(host),
    )


def api_key_from_env(env_name: str, explicit: bool, loopback: bool, who: str) -> str | None:
    """The key in ``env_name``; required when that variable was named explicitly or the endpoint is remote
    (a local server may need none)."""
    key = os.environ.get(env_name, "").strip() or None
    if key is None and (explicit or not loopback):
        raise BenchError(
            f"{who}: no API key: set the environment variable {env_name}"
            + ("" if explicit else " (or name another one with api_key_env=NAME)")
        )
    return key


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds asked for by ``retry-after-ms`` or ``Retry-After`` (delta seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def coerce_option(who: str, name: str, kind: type, default: Any, value: Any) -> Any:
    """A ``k=v`` option (already typed by the CLI, or text) as ``kind``; ``default`` when None."""
    if value is None:
        return default
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes"):
                return True
            if text in ("false", "0", "no"):
                return False
            raise ValueError
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise BenchError(
            f"{who}: argument {name} must be {'true or false' if kind is bool else kind.__name__}, got {value!r}"
        ) from None


def retryable_status(status: int) -> bool:
    return status in RETRY_STATUS or status >= 500


__all__ = [
    "RETRY_STATUS",
    "Endpoint",
    "api_key_from_env",
    "coerce_option",
    "is_loopback",
    "parse_endpoint",
    "retry_after_seconds",
    "retryable_status",
]


class RetryableError(Exception):
    """One failed attempt that may succeed when repeated."""

    def __init__(self, reason: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.reason = reason  # "429", "5xx", "timeout", "connection", "malformed", ...
        self.detail = detail
        self.retry_after = retry_after


def call_with_retries(
    attempt: Callable[..., Any],
    *args: Any,
    max_retries: int,
    backoff: float,
    max_backoff: float,
    max_wait: float,
    on_retry: Callable[[BaseException | None, int, float], None],
) -> Any:
    """``attempt(*args)``, repeated on :class:`RetryableError` up to ``max_retries`` more times (tenacity).

    The wait before retry ``n`` honours the server's ``Retry-After`` (capped at ``max_wait``), else is a
    full-jitter exponential backoff ``uniform(0, min(max_backoff, backoff * 2**(n-1)))``. ``on_retry(exc,
    attempt_number, delay)`` is called before each sleep. The last RetryableError is re-raised.
    """
    from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if not isinstance(exc, RetryableError):
            return backoff
        if exc.retry_after is not None:
            return min(exc.retry_after, max_wait)
        return random.uniform(0.0, min(max_backoff, backoff * 2 ** (state.attempt_number - 1)))

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        on_retry(exc, state.attempt_number, state.next_action.sleep if state.next_action else 0.0)

    retrying = Retrying(
        stop=stop_after_attempt(max_retries + 1),
        wait=wait,
        retry=retry_if_exception_type(RetryableError),
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(attempt, *args)
