package lua

import (
	"fmt"
	"strconv"
	"strings"
)

// Keys builds every Redis key the engine uses. All keys of a packet and the
// event stream of its shard share one hash tag, so each script touches a
// single slot and stays legal on Redis Cluster.
type Keys struct {
	// NS prefixes every key ("grab" in production; tests use their own).
	NS string
	// Shards is the number of event streams; fixed for a deployment.
	Shards int
}

// NewKeys returns key builders for namespace ns with the given shard count.
func NewKeys(ns string, shards int) Keys {
	if ns == "" {
		ns = "grab"
	}
	if shards <= 0 {
		shards = 16
	}
	return Keys{NS: ns, Shards: shards}
}

// Shard is the shard a packet belongs to.
func (k Keys) Shard(packetID int64) int {
	return int(packetID % int64(k.Shards))
}

func (k Keys) tag(shard int) string { return string(k.appendTag(make([]byte, 0, len(k.NS)+8), shard)) }

// appendTag appends tag(shard), without fmt: every grab and deduct builds
// its keys.
func (k Keys) appendTag(b []byte, shard int) []byte {
	b = append(b, k.NS...)
	b = append(b, ":{g:"...)
	if shard < 10 {
		b = append(b, '0')
	}
	b = strconv.AppendInt(b, int64(shard), 10)
	return append(b, '}')
}

// PacketKeys are the keys of one packet, in the order the scripts take them.
type PacketKeys struct {
	State    string // hash: status, expires_at, credit, finished_at, closed_at, ep (PacketHash)
	Shares   string // list of "seq:amount" not yet grabbed
	Grabbed  string // hash: user id -> "seq:amount:at_ms:credited:request"
	Eligible string // set of user ids allowed to grab
	Events   string // the shard's event stream
	Epoch    string // the shard's dataset epoch (see Keys.Epoch)
	LoadLock string // lock held while the state is rebuilt from MySQL
}

// Packet returns the keys of a packet.
//
// It is on every grab's path, so it makes one allocation: each key is a
// piece of one string, "<base>:shares <base>:grabbed <base>:eligible
// <base>:loadlock <tag>:events <tag>:epoch", where the first key's start is
// the state key.
func (k Keys) Packet(packetID int64) PacketKeys {
	o := k.object(k.Shard(packetID), ":pk:", packetID, [4]string{":shares", ":grabbed", ":eligible", ":loadlock"})
	return PacketKeys{State: o.base, Shares: o.keys[0], Grabbed: o.keys[1], Eligible: o.keys[2], LoadLock: o.keys[3],
		Events: o.events, Epoch: o.epoch}
}

// objectKeys are the keys of a packet or campaign: its base key, the base
// with each of four suffixes, and its shard's event stream and epoch.
type objectKeys struct {
	base, events, epoch string
	keys                [4]string
}

// object builds "<tag>:<kind>:<id>" (kind with its colons) and the rest of
// its objectKeys in one allocation: each key is a piece of one string,
// "<base><suffix 0>…<base><suffix 3><tag>:events<tag>:epoch", the base
// being the first key's start. Packets and campaigns build their keys on
// every grab.
func (k Keys) object(shard int, kind string, id int64, suffixes [4]string) objectKeys {
	var scratch [96]byte // on the stack unless NS is long
	base := k.appendTag(scratch[:0], shard)
	tag := len(base)
	base = strconv.AppendInt(append(base, kind...), id, 10)
	var b strings.Builder
	b.Grow(4*len(base) + 2*tag + 64)
	var ends [6]int // where each key ends in b
	for i, sfx := range suffixes {
		b.Write(base)
		b.WriteString(sfx)
		ends[i] = b.Len()
	}
	for i, sfx := range [...]string{":events", ":epoch"} {
		b.Write(base[:tag])
		b.WriteString(sfx)
		ends[4+i] = b.Len()
	}
	all := b.String()
	return objectKeys{base: all[:len(base)], keys: [4]string{all[:ends[0]], all[ends[0]:ends[1]], all[ends[1]:ends[2]],
		all[ends[2]:ends[3]]}, events: all[ends[3]:ends[4]], epoch: all[ends[4]:ends[5]]}
}

// CampaignKeys are the keys of one campaign, in the order the scripts take them.
type CampaignKeys struct {
	State    string // hash: status, starts_at, ends_at (unix ms), limit (awards per user)
	Awards   string // list of "seq:amount" not yet granted, in hand-out order
	Users    string // hash: user id -> "count:seq:amount:at_ms:request" (count and latest award)
	Awarded  string // hash: seq -> "user:amount:at_ms", so an award can be found by its seq
	Events   string // the shard's event stream
	Epoch    string // the shard's dataset epoch (see Keys.Epoch)
	LoadLock string // lock held while the state is rebuilt from MySQL
}

// Campaign returns the keys of a campaign. A campaign's shard is its id
// modulo Shards, as a packet's; "cp" keeps its keys apart from packet keys.
func (k Keys) Campaign(campaignID int64) CampaignKeys {
	o := k.object(k.Shard(campaignID), ":cp:", campaignID, [4]string{":awards", ":users", ":awarded", ":loadlock"})
	return CampaignKeys{State: o.base, Awards: o.keys[0], Users: o.keys[1], Awarded: o.keys[2], LoadLock: o.keys[3],
		Events: o.events, Epoch: o.epoch}
}

// Events is the event stream of a shard.
func (k Keys) Events(shard int) string { return k.tag(shard) + ":events" }

// Epoch is a shard's dataset epoch: the run id of the Redis server that
// holds the shard and a token (see epoch.lua), stamped on every new connection before any script runs
// (see WatchDataset). Every packet, campaign and stock product remembers the
// epoch it was last loaded or verified under; when the two differ (Redis
// restarted, came back from an older AOF or RDB, or failed over) the scripts
// answer "verify" and the engine re-verifies the object from MySQL first.
func (k Keys) Epoch(shard int) string { return k.tag(shard) + ":epoch" }

// DeadLetters is the stream where the writer parks events it cannot apply.
func (k Keys) DeadLetters(shard int) string { return k.tag(shard) + ":dead" }

// Probe returns the keys of the raw probe script for run id, on shard id mod Shards.
func (k Keys) Probe(id int64) ProbeKeys {
	base := fmt.Sprintf("%s:probe:%d", k.tag(k.Shard(id)), id)
	return ProbeKeys{Shares: base + ":shares", Grabbed: base + ":grabbed", Events: base + ":events"}
}

// StockShard is the shard of an activity product: its stock keys share that
// shard's hash tag, so one script changes its SKUs and writes the event.
func (k Keys) StockShard(activityID, productID int64) int {
	h := uint64(activityID)*0x9E3779B97F4A7C15 ^ uint64(productID)
	return int(h % uint64(k.Shards))
}

// StockKeys are the keys of one activity product's stock.
type StockKeys struct {
	Record   string // hash: op id -> what that op did (vouchers, orders, TCC branches)
	Events   string // the shard's event stream
	Epoch    string // the shard's dataset epoch (see Keys.Epoch)
	LoadLock string // lock held while the product is rebuilt or verified from MySQL
	Orders   string // the shard's order index (see StockOrders)
	base     string
}

// SKU is the hash of one SKU's counters, every scope in one key.
func (s StockKeys) SKU(skuID int64) string { return s.base + ":sku:" + strconv.FormatInt(skuID, 10) }

// Stock returns the keys of an activity product.
func (k Keys) Stock(activityID, productID int64) StockKeys {
	shard := k.StockShard(activityID, productID)
	// Built without fmt: a deduct builds these keys on every call.
	base := k.tag(shard) + ":stk:" + strconv.FormatInt(activityID, 10) + ":" + strconv.FormatInt(productID, 10)
	return StockKeys{Record: base + ":rec", Events: k.Events(shard), Epoch: k.Epoch(shard), LoadLock: base + ":loadlock",
		Orders: k.StockOrders(shard), base: base}
}

// StockOrders is a shard's order index: for each order of one product that
// deducted on the shard, its product, so the order's return finds it;
// "*" for an order across products; "!" for one returned before any deduct
// (stock_sale.lua, stock_index.lua).
func (k Keys) StockOrders(shard int) string { return k.tag(shard) + ":sorders" }

// StockOrder is the hash of one order's state across products; its own
// hash tag, as an order's products may sit on any shard.
func (k Keys) StockOrder(orderID string) string { return k.NS + ":{so:" + orderID + "}" }

// StockVoucher is the set of products a voucher touched, for its rollback.
func (k Keys) StockVoucher(voucher string) string { return k.NS + ":{sv:" + voucher + "}" }

// StockPending is the sorted set of orders across products whose deduct has
// begun and not ended (score: begin time, unix ms), for the sweep that
// settles the ones a dead process left half done.
func (k Keys) StockPending() string { return k.NS + ":{so}:pending" }

// FlashProbeKeys are the keys of the flash-sale probe script for one SKU.
type FlashProbeKeys struct {
	SKU    string // hash: t, a, r, s = total, available, reserved, sold
	Events string // the SKU's event stream
}

// FlashProbe returns the keys of the flash-sale probe for a SKU of an
// activity: a hash tag of the SKU's own, so the probe's SKUs spread over
// the slots as independent products would.
func (k Keys) FlashProbe(activityID, skuID int64) FlashProbeKeys {
	base := k.NS + ":{fs:" + strconv.FormatInt(activityID, 10) + ":" + strconv.FormatInt(skuID, 10) + "}"
	return FlashProbeKeys{SKU: base, Events: base + ":events"}
}
