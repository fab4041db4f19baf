// Package delivery carries cluster_send messages and asynchronous
// cluster_handoff tasks between nodes so that they survive restarts and
// network partitions.
//
// The sender's side is an outbox: Enqueue writes the message to a bbolt file
// and syncs it to disk before it returns, and a courier per target node
// pushes queued messages (in batches, in order) whenever that node is
// reachable, retrying with backoff and at once when the mesh sees the node
// come back. The target's side is an inbox: a push is stored (and synced)
// before it is acknowledged, so an acknowledged message is never lost, and a
// push that repeats one already stored (its acknowledgement was lost) is
// recognised and dropped. The target reports every change of state (started,
// done, failed, expired, cancelled) back to the sender the same way, stored
// until the sender acknowledges it.
//
// Order and duplicates: each sender numbers its messages per target agent
// (a stream; the stream also carries the sender's outbox epoch, made once
// per outbox file). The courier sends a stream strictly in order and the
// inbox keeps, per stream, the next number it expects: a number below it is a
// duplicate, and anything else moves it on. One dispatcher starts the inbox's
// messages, taking each stream's lowest waiting number first, so one
// sender's messages to one agent start in the order they were sent.
//
// What is not guaranteed: a message whose run was cut off by a restart of
// the target is reported failed, not run again (it may have partly run); a
// crash of the target in the instant between recording a start and starting
// the run reports a run that never began as failed. A cancel reaches a
// delivered message only while its node is reachable.
//
// The package knows nothing of tools or OpenClaw: a Runner runs inbound
// messages, a Notifier hands finished tasks to whoever asked for them.
package delivery
