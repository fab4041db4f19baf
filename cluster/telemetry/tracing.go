package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/clawmatrix/clawmatrix/internal/buildinfo"
	"github.com/clawmatrix/clawmatrix/schema"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// tracerName is the instrumentation scope of the proxy's and the remote
// tools' spans (the mesh names its own).
const tracerName = "github.com/clawmatrix/clawmatrix"

// ServiceName is the service.name of every node's spans; service.instance.id
// is the node id.
const ServiceName = "clawmatrix"

// exportTimeout bounds one export request to the collector.
const exportTimeout = 10 * time.Second

// newTracerProvider exports the node's spans to o.Endpoint over OTLP/HTTP
// in protobuf, in batches, sampling o.SampleRatio of the traces that start
// here and following the caller for the others.
func newTracerProvider(o *schema.OTel, nodeID string) (*sdktrace.TracerProvider, error) {
	exp, err := otlptracehttp.New(context.Background(),
		otlptracehttp.WithEndpointURL(TracesURL(o.Endpoint)),
		otlptracehttp.WithHeaders(o.Headers),
		otlptracehttp.WithTimeout(exportTimeout),
	)
	if err != nil {
		// The endpoint was validated; never show headers here.
		return nil, fmt.Errorf("otel.endpoint: cannot export spans there: %v", err)
	}
	res := resource.NewSchemaless(
		attribute.String("service.name", ServiceName),
		attribute.String("service.instance.id", nodeID),
		attribute.String("service.version", buildinfo.Version()),
	)
	return sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(o.SampleRatio))),
	), nil
}

// TracesURL is where spans are posted for an OTLP/HTTP base URL, as
// OpenTelemetry's OTEL_EXPORTER_OTLP_ENDPOINT rule has it.
func TracesURL(endpoint string) string {
	return strings.TrimRight(endpoint, "/") + "/v1/traces"
}

// traceContext reads and writes W3C traceparent (and tracestate) headers.
var traceContext = propagation.TraceContext{}

// Extract returns ctx with the trace context of an incoming request's
// headers (traceparent), if it has a valid one, as the remote parent.
func Extract(ctx context.Context, h http.Header) context.Context {
	if h.Get("Traceparent") == "" {
		return ctx
	}
	return traceContext.Extract(ctx, propagation.HeaderCarrier(h))
}

// Inject writes ctx's trace context, if any, as traceparent (and
// tracestate) headers of an outgoing request.
func Inject(ctx context.Context, h http.Header) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	traceContext.Inject(ctx, propagation.HeaderCarrier(h))
}

var errorHandlerOnce sync.Once

// LogExportErrors sends the errors of span export (a collector that is down
// or refuses) to log, at most one a minute. OpenTelemetry reports them
// process-wide, so the binary calls this once.
func LogExportErrors(log *slog.Logger) {
	errorHandlerOnce.Do(func() {
		var mu sync.Mutex
		var last time.Time
		suppressed := 0
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			mu.Lock()
			defer mu.Unlock()
			if time.Since(last) < time.Minute {
				suppressed++
				return
			}
			last = time.Now()
			log.Warn("telemetry: exporting spans failed", "err", err, "suppressed_since_last", suppressed)
			suppressed = 0
		}))
	})
}
