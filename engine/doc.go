// Package engine is what grab's domains share: the Redis connections and
// the store, the configuration (Config, DefaultConfig), the clock, the
// split of money into shares, the errors every domain returns with their
// API codes, the load locks under which Redis state is rebuilt from the
// store, and the writer that makes the scripts' events durable in the store.
//
// The domains are built on an Engine, each in its own package:
// engine/packet (red packets, their payments and refunds), engine/campaign
// (campaigns and their payouts) and engine/stock (activity SKUs). Package
// grab, at the module's root, builds all of them and runs their loops; start
// there to embed grab.
//
// A call answers from Redis (one Lua script); the event the script appends
// to its shard's stream is applied to the store by RunWriter a moment later,
// and WaitDurable waits for that. The store must be migrated before New
// (store.DB.Migrate).
package engine
