// Package events reads the events grab publishes to NATS JetStream: the
// reading side of the transactional outbox, for services such as the points
// and WMS consumers that must act on every event once, and grab's own
// best-effort webhooks.
//
// Each event is one JetStream message: subject "grab.<kind>.<aggregate id>"
// (event.Message.Subject), body the JSON of an event.Message, header
// Nats-Msg-Id the message's ID. The stream is named by the deployment
// (DefaultStream unless told otherwise).
//
// Consume runs a durable pull consumer with explicit acks: an event is acked
// after its handler succeeds, nakked with a delay when the handler fails, and
// acked and logged when its body is not an event (a poison message is never
// redelivered). JetStream delivers at least once — a lost ack, a handler that
// outlives its ack wait or an event published twice outside the stream's
// duplicate window all deliver an event again — so Consume drops an event
// whose ID its Seen has marked. NewMemorySeen is a bounded in-memory Seen,
// enough for an example or for effects that may repeat after a restart. A
// consumer whose effect must happen exactly once (points credited, stock
// moved) keeps its seen ids in its own database and marks an id in the same
// transaction as the effect: its handler inserts the id (a unique key) and
// applies the effect in one transaction, treating a duplicate key as done
// (return nil), its Seen asks that table, and its Mark does nothing. A crash between the effect and the ack then redelivers
// an event the table already holds, and it is dropped.
//
// Webhooks (RunWebhooks) is one such consumer: it POSTs each event of the
// chosen kinds to a URL, signed with HMAC-SHA256 (Sign, VerifySignature),
// retries a bounded number of times with jittered backoff and then drops the
// event. It runs as its own durable consumer, so a slow or failing endpoint
// delays only itself: neither the relay nor any other consumer waits on it.
package events
