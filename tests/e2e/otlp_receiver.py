"""A real OTLP/HTTP trace receiver for the tests: decodes `ExportTraceServiceRequest` protobuf
bodies with the official `opentelemetry-proto` package and keeps every span received."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def _value(v: AnyValue):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@dataclass
class ReceivedSpan:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict = field(default_factory=dict)
    status_code: int = 0


class OtlpReceiver:
    """Listens on 127.0.0.1 (a free port) at `endpoint` + `/v1/traces`."""

    def __init__(self):
        spans: list[ReceivedSpan] = []
        lock = threading.Lock()
        self.spans = spans
        self.lock = lock

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path != "/v1/traces" or \
                        self.headers.get("content-type") != "application/x-protobuf":
                    self.send_response(400)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                received = []
                for rs in request.resource_spans:
                    resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        for s in ss.spans:
                            received.append(ReceivedSpan(
                                service=resource.get("service.name", ""),
                                name=s.name,
                                kind=s.kind,
                                trace_id=s.trace_id.hex(),
                                span_id=s.span_id.hex(),
                                parent_span_id=s.parent_span_id.hex(),
                                attributes={a.key: _value(a.value) for a in s.attributes},
                                status_code=s.status.code,
                            ))
                with lock:
                    spans.extend(received)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, check, timeout: float = 15.0) -> list[ReceivedSpan]:
        """Waits (bounded) until `check(spans)` returns a true value and returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = check(list(self.spans))
            if found:
                return found
            time.sleep(0.05)
        with self.lock:
            names = [(s.name, s.trace_id) for s in self.spans]
        raise TimeoutError(f"spans not received within {timeout}s; have {names}")

    def trace(self, trace_id: str, count: int) -> list[ReceivedSpan]:
        """The spans of one trace, once `count` have arrived."""
        return self.wait_for(
            lambda spans: (t := [s for s in spans if s.trace_id == trace_id]) and len(t) >= count and t)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
