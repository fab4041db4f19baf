// Package proxy is the cluster model proxy (README.md, Routing and failover;
// the path of a request is in docs/ARCHITECTURE.md).
//
// The front (Server) is an OpenAI-compatible HTTP server on 127.0.0.1 that
// local clients such as OpenClaw call; it picks a node serving the requested
// model and forwards the request over the mesh. The serving side (Serving,
// registered on every node with RegisterServing) answers those mesh requests
// by calling the model's upstream, the OpenClaw provider the host passed, or
// the local OpenClaw gateway.
//
// On the mesh a request is the client's body, byte for byte. The response is
// a head message (HTTP status and headers, see head) followed by the body: for
// SSE one message per batch of complete events, otherwise the bytes as they
// arrive. A failure after the head ends the mesh stream with an error. The
// front writes nothing to the client, not even the head, before the first
// body bytes: a response whose node becomes unreachable before them goes to
// the next node serving the model. A later failure becomes an SSE error event
// (streams) or a 502 (held plain responses).
package proxy
