"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests (no network, no model).

``POST /v1/chat/completions`` answers deterministically from the request (:func:`default_answer`, or a
``responder(received) -> str`` of your own, given the :class:`Received` request) and records every
request it receives. Failures are injected in arrival order with :meth:`StubServer.add_faults`: 429 with
``Retry-After``, 5xx, a delay past the client's timeout, a malformed body, or any other status.
``GET /v1/models`` lists the served model. For the LLM judge's tests, :func:`judged_pair` reads back the
(reference, candidate) pair a CheXprompt request asks about.

    with StubServer(expected_key="sk-test") as server:
        server.add_faults(Fault("429", retry_after="1"), Fault("500"))
        ... base_url=server.base_url ...
        assert server.count == ...
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URL_PREFIX = "data:image/png;base64,"
CLOSED_STARTS = ("is ", "are ", "does ", "do ", "can ", "was ", "were ", "has ", "have ")


@dataclass
class Fault:
    """One injected failure: ``kind`` is "429", "500" (any status code as text), "timeout" or "malformed"."""

    kind: str
    retry_after: str | None = None  # Retry-After header value (429 / 5xx)
    delay: float = 0.0  # "timeout": seconds to sleep before answering (longer than the client's timeout)
    message: str = "injected failure"


@dataclass
class Received:
    """What the server saw in one request."""

    path: str
    authorization: str | None
    body: dict[str, Any] | None
    prompt: str = ""
    system: str | None = None
    images: list[bytes] = field(default_factory=list)  # decoded PNG bytes
    roles: list[str] = field(default_factory=list)  # roles of the messages, in order
    fault: str | None = None
    answer: str | None = None  # what the server answered (None for a failure)


Responder = Callable[[Received], str]


# --------------------------------------------------------------------------- deterministic answers


def _digest(*parts: Any) -> int:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return int.from_bytes(h.digest()[:8], "big")


def _line_after(marker: str, prompt: str) -> str | None:
    m = re.search(rf"^{re.escape(marker)}\s*(.+)$", prompt, flags=re.IGNORECASE | re.MULTILINE)
    return m.group(1).strip() if m else None


def default_answer(prompt: str, images: list[bytes]) -> str:
    """The stub's answer, a pure function of the prompt text and the image bytes:

    - a line ``Candidates: a; b; c`` → one candidate chosen by a hash of the images (one answer in
      seven is "I am not sure." — unparseable); "comma-separated" in the prompt → one or two candidates
      joined by ", "; "step by step" → a short reasoning, then ``Answer: ...`` on the last line;
    - a line ``Question: ...`` → "yes"/"no" (by hash) for a question starting with is/are/does/...,
      else the question's last word;
    - a line ``Indication: ...`` → a report that repeats the indication;
    - anything else → a fixed normal report.
    """
    h = _digest(*images, prompt)
    candidates = _line_after("Candidates:", prompt)
    if candidates is not None:
        names = [c.strip() for c in candidates.split(";") if c.strip()]
        pick = h % (len(names) + 1)
        if pick == len(names) or h % 7 == 0:
            answer = "I am not sure."
        elif "comma-separated" in prompt.lower():
            second = (h // 7) % len(names)
            answer = ", ".join(dict.fromkeys([names[pick], names[second]]))
        else:
            answer = names[pick]
        if "step by step" in prompt.lower():
            return f"The image shows several features.\nConsidering each candidate in turn.\nAnswer: {answer}"
        return answer
    question = _line_after("Question:", prompt)
    if question is not None:
        if question.lower().startswith(CLOSED_STARTS):
            return "yes" if h % 2 == 0 else "no"
        words = re.findall(r"[A-Za-z]+", question)
        return words[-1].lower() if words else "unknown"
    indication = _line_after("Indication:", prompt)
    if indication is not None:
        return f"Indication reviewed: {indication} The lungs are clear. No pleural effusion."
    return "The heart size is normal. The lungs are clear. No pleural effusion or pneumothorax."


_PAIR_RX = re.compile(r"Reference report: <<<(.*?)>>>\s*Candidate report: <<<(.*?)>>>", re.DOTALL)


def judged_pair(prompt: str) -> tuple[str, str]:
    """The (reference, candidate) of a judge request: the last pair of the prompt (the examples come first)."""
    pairs = _PAIR_RX.findall(prompt)
    if not pairs:
        raise ValueError("not a judge request: no 'Reference report: <<<...>>>' pair in the prompt")
    return pairs[-1]


# --------------------------------------------------------------------------- the server


class StubServer:
    def __init__(
        self, responder: Responder | None = None, expected_key: str | None = None, model: str = "stub-model"
    ) -> None:
        self.responder = responder
        self.expected_key = expected_key
        self.model = model
        self.received: list[Received] = []
        self.faults: deque[Fault] = deque()
        self.faults_served: list[str] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def count(self) -> int:
        """Chat-completion requests received (failed ones included)."""
        with self._lock:
            return len(self.received)

    def add_faults(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def answered(self) -> list[Received]:
        """Requests that got a normal answer."""
        with self._lock:
            return [r for r in self.received if r.fault is None and r.body is not None]

    def reset(self) -> None:
        with self._lock:
            self.received.clear()
            self.faults.clear()
            self.faults_served.clear()

    def start(self) -> StubServer:
        handler = _make_handler(self)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="openai-stub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ request handling

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self.faults.popleft() if self.faults else None

    def _record(self, item: Received) -> None:
        with self._lock:
            self.received.append(item)
            if item.fault:
                self.faults_served.append(item.fault)

    def answer(self, item: Received) -> str:
        if self.responder is not None:
            return self.responder(item)
        return default_answer(item.prompt, item.images)


def parse_messages(body: dict[str, Any]) -> tuple[str, str | None, list[bytes]]:
    """(user text, system text, decoded PNG images) of a chat-completion request; ValueError if malformed."""
    texts: list[str] = []
    system = None
    images: list[bytes] = []
    for message in body["messages"]:
        content = message["content"]
        if message["role"] == "system":
            system = content if isinstance(content, str) else " ".join(p["text"] for p in content)
            continue
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for part in parts:
            if part["type"] == "text":
                texts.append(part["text"])
            elif part["type"] == "image_url":
                url = part["image_url"]["url"]
                if not url.startswith(DATA_URL_PREFIX):
                    raise ValueError("image is not a PNG data URL")
                data = base64.b64decode(url[len(DATA_URL_PREFIX) :], validate=True)
                if not data.startswith(PNG_SIGNATURE):
                    raise ValueError("image data is not a PNG")
                images.append(data)
            else:
                raise ValueError(f"unknown content part {part['type']!r}")
    return "\n".join(texts), system, images


def _make_handler(server: StubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
            body = {"error": {"message": message, "type": "stub_error", "code": status}}
            self._send(status, json.dumps(body).encode(), headers)

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                data = {"object": "list", "data": [{"id": server.model, "object": "model", "owned_by": "stub"}]}
                self._send(200, json.dumps(data).encode())
            else:
                self._error(404, f"no route {self.path}")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            auth = self.headers.get("Authorization")
            if not self.path.rstrip("/").endswith("/chat/completions"):
                server._record(Received(self.path, auth, None, fault="404"))
                self._error(404, f"no route {self.path}")
                return
            try:
                body = json.loads(raw)
                prompt, system, images = parse_messages(body)
            except (ValueError, KeyError, TypeError) as exc:
                server._record(Received(self.path, auth, None, fault="400"))
                self._error(400, f"malformed request: {exc}")
                return
            roles = [m.get("role", "") for m in body["messages"]]
            item = Received(self.path, auth, body, prompt=prompt, system=system, images=images, roles=roles)
            if server.expected_key is not None and auth != f"Bearer {server.expected_key}":
                item.fault = "401"
                server._record(item)
                self._error(401, "invalid API key")
                return
            fault = server._next_fault()
            if fault is not None:
                item.fault = fault.kind
                server._record(item)
                self._serve_fault(fault)
                return
            try:
                text = item.answer = server.answer(item)
            except Exception as exc:  # a broken responder is the server's fault: 500
                item.fault = "responder"
                server._record(item)
                self._error(500, f"responder failed: {exc!r}")
                return
            server._record(item)
            completion = {
                "id": f"chatcmpl-{len(server.received)}",
                "object": "chat.completion",
                "created": 0,
                "model": body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split())},
            }
            self._send(200, json.dumps(completion).encode())

        def _serve_fault(self, fault: Fault) -> None:
            if fault.kind == "timeout":
                time.sleep(fault.delay)
                self._error(503, "too late")
            elif fault.kind == "malformed":
                self._send(200, b'{"choices": [ this is not json')
            else:
                headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
                self._error(int(fault.kind), fault.message, headers)

    return Handler
