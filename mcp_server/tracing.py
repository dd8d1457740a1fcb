"""Trace export for server processes, chosen by the standard OpenTelemetry variables.

    OTEL_TRACES_EXPORTER=otlp|console|none   (comma list; unset or none: spans are not exported)
    OTEL_SERVICE_NAME=mahavishnu             OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 ...

otlp needs the optional extra: pip install 'mahavishnu-pools[otlp]'. Without the SDK the
OpenTelemetry API makes every span a no-op, so tracing costs nothing until configured.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("mahavishnu.server")


def configure_tracing(default_service: str = "mahavishnu") -> bool:
    names = [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    names = [n for n in names if n != "none"]
    if not names:
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        log.warning("OTEL_TRACES_EXPORTER is set but opentelemetry-sdk is not installed: "
                    "pip install 'mahavishnu-pools[otlp]'")
        return False
    service = os.environ.get("OTEL_SERVICE_NAME", default_service)
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    for name in names:
        if name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif name == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError:
                log.warning("OTEL_TRACES_EXPORTER=otlp needs pip install 'mahavishnu-pools[otlp]'")
                continue
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            log.warning("unknown OTEL_TRACES_EXPORTER %r (use otlp, console or none)", name)
    trace.set_tracer_provider(provider)
    return True
