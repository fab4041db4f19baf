// The otel config the sidecar gets when the plugin config has none: taken
// from OpenClaw's own diagnostics.otel, so that one trace holds OpenClaw's
// model call and every clawmatrix hop (README.md, Observability). Only
// what OpenClaw itself would export traces with is taken; anything the
// sidecar would refuse is left out with a warning rather than stopping the
// plugin. Header values are secrets: never logged.

const SIGNAL_PATHS = ["/v1/traces", "/v1/metrics", "/v1/logs"];
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function nonBlank(v) {
  return typeof v === "string" && v.trim() !== "" ? v.trim() : undefined;
}

/** The base URL of an OTLP endpoint: without a trailing signal path. */
function baseOf(url) {
  const trimmed = url.replace(/\/+$/, "");
  for (const p of SIGNAL_PATHS) {
    if (trimmed.endsWith(p)) return trimmed.slice(0, -p.length);
  }
  return trimmed;
}

/**
 * Returns the sidecar's otel config ({endpoint, sampleRatio?, headers?})
 * for OpenClaw's config and environment, or undefined when OpenClaw does
 * not export traces over OTLP/HTTP; log(level, message) says why a setting
 * was not taken.
 */
export function otelFromDiagnostics(openclawConfig, env, log) {
  const diag = openclawConfig?.diagnostics;
  const otel = diag?.otel;
  if (!otel || diag.enabled === false || otel.enabled !== true || otel.traces === false) return undefined;
  if (String(env.OTEL_SDK_DISABLED ?? "").toLowerCase() === "true") return undefined;
  const protocol = nonBlank(otel.protocol) ?? nonBlank(env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL) ?? nonBlank(env.OTEL_EXPORTER_OTLP_PROTOCOL) ?? "http/protobuf";
  if (protocol !== "http/protobuf") {
    log("warn", `diagnostics.otel: protocol ${protocol} is not OTLP/HTTP protobuf; clawmatrix exports no spans (set otel in the clawmatrix config to choose a collector)`);
    return undefined;
  }
  // Signal-specific endpoints are exact URLs; the shared one is a base.
  const exact = nonBlank(otel.tracesEndpoint) ?? nonBlank(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
  let endpoint;
  if (exact) {
    const trimmed = exact.replace(/\/+$/, "");
    if (!trimmed.endsWith("/v1/traces")) {
      log("warn", "diagnostics.otel.tracesEndpoint does not end in /v1/traces, so clawmatrix cannot derive its base URL; set otel.endpoint in the clawmatrix config");
      return undefined;
    }
    endpoint = trimmed.slice(0, -"/v1/traces".length);
  } else {
    const shared = nonBlank(otel.endpoint) ?? nonBlank(env.OTEL_EXPORTER_OTLP_ENDPOINT);
    if (!shared) return undefined;
    endpoint = baseOf(shared);
  }
  let url;
  try {
    url = new URL(endpoint);
  } catch {
    log("warn", "diagnostics.otel: the collector endpoint is not a URL; clawmatrix exports no spans");
    return undefined;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    log("warn", `diagnostics.otel: the collector endpoint uses ${url.protocol}, not http or https; clawmatrix exports no spans`);
    return undefined;
  }
  if (url.username || url.password || url.search || url.hash) {
    log("warn", "diagnostics.otel: the collector endpoint carries credentials, a query or a fragment, which clawmatrix does not take; put credentials in diagnostics.otel.headers");
    return undefined;
  }
  const out = { endpoint };
  if (typeof otel.sampleRate === "number" && otel.sampleRate >= 0 && otel.sampleRate <= 1) out.sampleRatio = otel.sampleRate;
  if (otel.headers && typeof otel.headers === "object") {
    const headers = {};
    for (const [name, value] of Object.entries(otel.headers)) {
      if (!HEADER_NAME.test(name) || typeof value !== "string" || /[\r\n\0]/.test(value)) {
        log("warn", `diagnostics.otel.headers: header ${JSON.stringify(name)} is left out (not a header name, or its value is not one line of text)`);
        continue;
      }
      headers[name] = value;
    }
    if (Object.keys(headers).length > 0) out.headers = headers;
  }
  return out;
}
