// Package packet is WeChat-style red packets: a sender creates a packet
// (single, group_equal or group_lucky, split into shares when created), pays
// it from the balance or through a payment channel (engine/channel), and
// members of its group grab its shares from Redis, one atomic script each.
// Grabs of a paid packet are credited to the grabbers' balances by the
// engine's writer; grabs of a packet whose payment awaits settlement are
// credited when it settles (Notify, or the reconciler). An expired packet is
// closed and what is left goes back to its sender (the refunder).
//
// Build a Service with New on an engine.Engine (grab.New does) and run
// RunRefunder and RunReconciler next to the engine's writer.
package packet
