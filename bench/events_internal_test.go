package bench

import (
	"slices"
	"testing"
	"time"

	"github.com/grab-engine/grab/event"
)

// The events audit wants each owned share's grab in the stream once, with
// its user and amount, a credited share credited once, and no grab of a
// share MySQL does not hold.
func TestCompareEvents(t *testing.T) {
	at := time.Unix(1_700_000_000, 0)
	grabbed := func(packet int64, seq int, user int64, fen int64, credited bool) event.Message {
		return event.PacketGrabbed{PacketID: packet, Seq: seq, UserID: user, Amount: event.Yuan(fen), Credited: credited}.Message(at)
	}
	credited := event.PacketCredited{PacketID: 1, Seq: 2, UserID: 8, Amount: "0.50"}.Message(at)
	shares := []auditShare{
		{PacketID: 1, Seq: 1, Amount: 150, UserID: 7, Credited: true},
		{PacketID: 1, Seq: 2, Amount: 50, UserID: 8, Credited: true},
	}
	clean := []event.Message{grabbed(1, 1, 7, 150, true), grabbed(1, 2, 8, 50, false), credited}
	for _, c := range []struct {
		name string
		msgs []event.Message
		want []string
	}{
		{"clean", clean, nil},
		{"a grab twice", append(slices.Clone(clean), grabbed(1, 1, 7, 150, true)), []string{
			"grab not streamed once: share 1:1 of user 7 is in the stream 2 times",
			"credit not streamed once: share 1:1 of user 7 is credited; the stream credits it 2 times"}},
		{"a grab missing", clean[1:], []string{
			"grab not streamed once: share 1:1 of user 7 is in the stream 0 times",
			"credit not streamed once: share 1:1 of user 7 is credited; the stream credits it 0 times"}},
		{"a credit missing", clean[:2], []string{
			"credit not streamed once: share 1:2 of user 8 is credited; the stream credits it 0 times"}},
		{"a wrong amount", []event.Message{grabbed(1, 1, 7, 149, true), clean[1], credited}, []string{
			`grab streamed wrong: share 1:1 is user 7's 150 fen; the stream says {PacketID:1 Seq:1 UserID:7 Amount:1.49 Credited:true Finished:false}`}},
		{"a grab of no share", append(slices.Clone(clean), grabbed(2, 1, 9, 100, true)), []string{
			"grab streamed without a share: the stream has 1 grabs of share 2:1, which has no owner in MySQL"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := &auditor{counts: map[string]int{}}
			if err := compareEvents(shares, c.msgs, a); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(a.violations, c.want) {
				t.Fatalf("violations\n%q\nwant\n%q", a.violations, c.want)
			}
		})
	}
}
