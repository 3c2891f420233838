package lua

import (
	"strings"
	"testing"
)

// keySlot is Redis Cluster's slot of a key: CRC16/XMODEM of its hash tag
// (the part between the first "{" and the next "}", if not empty) or of the
// whole key, modulo 16384.
func keySlot(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return crc16(key) % 16384
}

// crc16 is CRC16/XMODEM (polynomial 0x1021, initial 0), as Redis Cluster uses.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

func TestKeySlot(t *testing.T) {
	if c := crc16("123456789"); c != 0x31C3 {
		t.Fatalf("crc16(123456789) = %#x, want 0x31c3", c)
	}
	// Values CLUSTER KEYSLOT answers.
	for key, want := range map[string]uint16{"foo": 12182, "{user1000}.following": 3443, "{user1000}.followers": 3443} {
		if got := keySlot(key); got != want {
			t.Errorf("keySlot(%q) = %d, want %d", key, got, want)
		}
	}
}

// Every script's KEYS, as its wrapper builds them, share one slot, so each
// script is legal on Redis Cluster.
func TestEachScriptsKeysShareOneSlot(t *testing.T) {
	for _, k := range []Keys{NewKeys("grab", 16), NewKeys("t1", 4), NewKeys("grab", 128)} {
		items := []StockItem{{SKU: 1, Scope: "high_seas", Qty: 1}, {SKU: 2, Scope: "pool:3", Qty: 2}}
		stockKeys := func(op string) []string {
			_, keys, _ := stockCall(k.Stock(7, 9), StockOp{Op: op, ActivityID: 7, ProductID: 9, Items: items})
			return keys
		}
		for name, keys := range map[string][]string{
			"grab.lua":                grabKeys(k.Packet(123)),
			"flashsale_probe.lua":     flashProbeKeys(k.FlashProbe(7, 1)),
			"load.lua":                loadKeys(k.Packet(123)),
			"close.lua":               closeKeys(k.Packet(123)),
			"settle.lua":              settleKeys(k.Packet(123)),
			"unlock.lua":              {k.Packet(123).LoadLock},
			"probe.lua":               probeKeys(k.Probe(42)),
			"campaign_grab.lua":       campaignGrabKeys(k.Campaign(5)),
			"campaign_load.lua":       campaignLoadKeys(k.Campaign(5)),
			"epoch.lua":               {k.Epoch(3)},
			"stock_sale.lua":          stockKeys("deduct"),
			"stock_tcc.lua":           stockKeys("try"),
			"stock_voucher.lua":       stockKeys("submit"),
			"stock_load.lua records":  stockLoadKeys(k.Stock(7, 9), nil),
			"stock_load.lua finish":   stockLoadKeys(k.Stock(7, 9), []StockSnapshot{{SKU: 1}, {SKU: 2}}),
			"stock_order.lua":         {k.StockOrder("o1")},
			"stock_voucher_index.lua": {k.StockVoucher("v1")},
			"stock_index.lua":         {k.StockOrders(2)},
		} {
			for _, key := range keys[1:] {
				if keySlot(key) != keySlot(keys[0]) {
					t.Errorf("%s/%d %s: %q (slot %d) and %q (slot %d) differ", k.NS, k.Shards, name,
						keys[0], keySlot(keys[0]), key, keySlot(key))
				}
			}
		}
	}
}
