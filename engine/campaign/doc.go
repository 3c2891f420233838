// Package campaign is campaign awards: an admin creates a campaign whose
// budget is pre-split into awards (Split), users grab them from Redis, one
// atomic script each, and each award is paid out to its winner through the
// company's transfer service (engine/transfer) exactly once, by its
// out-trade-no. A payout whose outcome is unknown stays transferring (the
// payout's status 7) until the payout sweeper asks the service and finishes
// it (status 4, transferred); docs/glossary.md has the statuses.
//
// Build a Service with New on an engine.Engine (grab.New does) and run
// RunPayoutSweeper next to the engine's writer.
package campaign
