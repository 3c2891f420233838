package http

import (
	nethttp "net/http"
	"time"

	"github.com/grab-engine/grab/engine/packet"

	"github.com/gin-gonic/gin"
	"github.com/grab-engine/grab/engine/errs"
)

// Request bodies. Pointers tell a missing field from a zero one.

type depositRequest struct {
	Amount *Money  `json:"amount"`
	Ref    *string `json:"ref"`
}

type membersRequest struct {
	UserIDs *[]int64 `json:"user_ids"`
}

type createRequest struct {
	Kind     *string `json:"kind"`
	GroupID  *int64  `json:"group_id"`
	ToUserID *int64  `json:"to_user_id"`
	Count    *int    `json:"count"`
	Amount   *Money  `json:"amount"`
	Greeting *string `json:"greeting"`
}

type payRequest struct {
	Method *string `json:"method"`
}

// Response bodies.

type balanceResponse struct {
	UserID  int64 `json:"user_id"`
	Balance Money `json:"balance"`
}

type membersResponse struct {
	GroupID int64 `json:"group_id"`
	Members int   `json:"members"`
}

type grabResponse struct {
	PacketID int64 `json:"packet_id"`
	Amount   Money `json:"amount"`
	Seq      int   `json:"seq"`
	Repeat   bool  `json:"repeat"`
	Credited bool  `json:"credited"`
}

type packetResponse struct {
	PacketID        int64       `json:"packet_id"`
	Kind            string      `json:"kind"`
	SenderID        int64       `json:"sender_id"`
	GroupID         *int64      `json:"group_id"`
	ToUserID        *int64      `json:"to_user_id"`
	Count           int         `json:"count"`
	Total           Money       `json:"total"`
	Greeting        string      `json:"greeting"`
	Status          string      `json:"status"`
	PayStatus       string      `json:"pay_status"`
	CreatedAt       string      `json:"created_at"`
	ExpiresAt       *string     `json:"expires_at"`
	FinishedAt      *string     `json:"finished_at"`
	RemainingCount  int         `json:"remaining_count"`
	RemainingAmount Money       `json:"remaining_amount"`
	RefundedAmount  Money       `json:"refunded_amount"`
	Grabs           []grabView  `json:"grabs"`
	MyGrab          *myGrabView `json:"my_grab"`
}

type grabView struct {
	UserID    int64  `json:"user_id"`
	Amount    Money  `json:"amount"`
	Seq       int    `json:"seq"`
	GrabbedAt string `json:"grabbed_at"`
	Best      bool   `json:"best"`
}

type myGrabView struct {
	Amount   Money `json:"amount"`
	Seq      int   `json:"seq"`
	Credited bool  `json:"credited"`
}

// timeFormat is RFC 3339 in UTC with milliseconds, the precision grabs are recorded at.
const timeFormat = "2006-01-02T15:04:05.000Z07:00"

func formatTime(t time.Time) string { return t.UTC().Format(timeFormat) }

func optTime(t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := formatTime(*t)
	return &s
}

func optID(id int64) *int64 {
	if id == 0 {
		return nil
	}
	return &id
}

func packetView(p packet.Packet) packetResponse {
	v := packetResponse{
		PacketID: p.ID, Kind: p.Kind, SenderID: p.SenderID, GroupID: optID(p.GroupID), ToUserID: optID(p.ToUserID),
		Count: p.Count, Total: Money(p.Total), Greeting: p.Greeting, Status: p.Status, PayStatus: p.PayStatus,
		CreatedAt: formatTime(p.CreatedAt), ExpiresAt: optTime(p.ExpiresAt), FinishedAt: optTime(p.FinishedAt),
		RemainingCount: p.RemainingCount, RemainingAmount: Money(p.RemainingAmount), RefundedAmount: Money(p.RefundedAmount),
		Grabs: make([]grabView, 0, len(p.Grabs)),
	}
	for _, g := range p.Grabs {
		v.Grabs = append(v.Grabs, grabView{UserID: g.UserID, Amount: Money(g.Amount), Seq: g.Seq,
			GrabbedAt: formatTime(g.GrabbedAt), Best: g.Best})
	}
	if p.MyGrab != nil {
		v.MyGrab = &myGrabView{Amount: Money(p.MyGrab.Amount), Seq: p.MyGrab.Seq, Credited: p.MyGrab.Credited}
	}
	return v
}

func (s *server) deposit(c *gin.Context) {
	uid, err := pathID(c, "user_id")
	if err != nil {
		s.fail(c, err)
		return
	}
	var req depositRequest
	if err := decodeBody(c, &req); err != nil {
		s.fail(c, err)
		return
	}
	amount, err := requireMoney("amount", req.Amount)
	if err != nil {
		s.fail(c, err)
		return
	}
	ref, err := requireString("ref", req.Ref)
	if err != nil {
		s.fail(c, err)
		return
	}
	balance, err := s.packets.Deposit(c.Request.Context(), uid, amount, ref)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, balanceResponse{UserID: uid, Balance: Money(balance)})
}

func (s *server) setMembers(c *gin.Context) {
	gid, err := pathID(c, "group_id")
	if err != nil {
		s.fail(c, err)
		return
	}
	var req membersRequest
	if err := decodeBody(c, &req); err != nil {
		s.fail(c, err)
		return
	}
	if req.UserIDs == nil {
		s.fail(c, invalid("user_ids is required"))
		return
	}
	for _, u := range *req.UserIDs {
		if u <= 0 {
			s.fail(c, invalid("user_ids must be positive integers"))
			return
		}
	}
	n, err := s.packets.SetGroupMembers(c.Request.Context(), gid, *req.UserIDs)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, membersResponse{GroupID: gid, Members: n})
}

func (s *server) balance(c *gin.Context) {
	uid := userID(c)
	b, err := s.packets.Balance(c.Request.Context(), uid)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, balanceResponse{UserID: uid, Balance: Money(b)})
}

func (s *server) createPacket(c *gin.Context) {
	var req createRequest
	if err := decodeBody(c, &req); err != nil {
		s.fail(c, err)
		return
	}
	np, err := req.toEngine(userID(c))
	if err != nil {
		s.fail(c, err)
		return
	}
	p, err := s.packets.CreatePacket(c.Request.Context(), np)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(nethttp.StatusCreated, packetView(p))
}

// toEngine checks what the JSON layer can check (presence, id signs) and
// leaves the domain rules (limits, kinds, membership) to the engine.
func (r createRequest) toEngine(sender int64) (packet.NewPacket, error) {
	kind, err := requireString("kind", r.Kind)
	if err != nil {
		return packet.NewPacket{}, err
	}
	amount, err := requireMoney("amount", r.Amount)
	if err != nil {
		return packet.NewPacket{}, err
	}
	np := packet.NewPacket{SenderID: sender, Kind: kind, Amount: amount}
	if r.Greeting != nil {
		np.Greeting = *r.Greeting
	}
	switch kind {
	case packet.KindGroupLucky, packet.KindGroupEqual:
		if np.GroupID, err = requireID("group_id", r.GroupID); err != nil {
			return packet.NewPacket{}, err
		}
		if r.ToUserID != nil {
			return packet.NewPacket{}, invalid("to_user_id is only for single packets")
		}
		if r.Count == nil {
			return packet.NewPacket{}, invalid("count is required")
		}
		np.Count = *r.Count
		if np.Count <= 0 {
			// The engine would accept nothing below 1 either; say so here so a
			// zero is never mistaken for "absent".
			return packet.NewPacket{}, invalid("count must be at least 1")
		}
	case packet.KindSingle:
		if np.ToUserID, err = requireID("to_user_id", r.ToUserID); err != nil {
			return packet.NewPacket{}, err
		}
		if r.GroupID != nil || r.Count != nil {
			return packet.NewPacket{}, invalid("single packets take neither group_id nor count")
		}
	default:
		return packet.NewPacket{}, invalid("kind must be group_lucky, group_equal or single")
	}
	return np, nil
}

func (s *server) payPacket(c *gin.Context) {
	id, err := pathID(c, "id")
	if err != nil {
		s.fail(c, err)
		return
	}
	var req payRequest
	if err := decodeBody(c, &req); err != nil {
		s.fail(c, err)
		return
	}
	method, err := requireString("method", req.Method)
	if err != nil {
		s.fail(c, err)
		return
	}
	if method != "balance" {
		pay, err := s.packets.PayByProvider(c.Request.Context(), id, userID(c), method)
		if err != nil {
			s.fail(c, err)
			return
		}
		c.JSON(nethttp.StatusOK, tradeResponse{TradeNo: pay.TradeNo, Amount: Money(pay.Amount), Status: pay.PayStatus,
			PayParams: pay.PayParams})
		return
	}
	p, err := s.packets.PayByBalance(c.Request.Context(), id, userID(c))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, packetView(p))
}

func (s *server) grab(c *gin.Context) {
	start := time.Now()
	code := errs.CodeInternal // what a panic would have answered
	defer func() {
		s.m.grabCount.inc(code)
		s.m.grabLatency.Observe(time.Since(start).Seconds())
	}()
	// The grab takes no body; whatever is sent is ignored.
	id, err := pathID(c, "id")
	if err != nil {
		code = errs.CodeInvalidArgument
		s.fail(c, err)
		return
	}
	r, err := s.packets.Grab(c.Request.Context(), id, userID(c))
	if err != nil {
		s.fail(c, err)
		code = c.GetString(ctxErrorCode)
		return
	}
	code = "OK"
	var buf [128]byte
	writeJSON(c, nethttp.StatusOK, appendGrabJSON(buf[:0], grabResponse{PacketID: r.PacketID,
		Amount: Money(r.Amount), Seq: r.Seq, Repeat: r.Repeat, Credited: r.Credited}))
}

func (s *server) getPacket(c *gin.Context) {
	id, err := pathID(c, "id")
	if err != nil {
		s.fail(c, err)
		return
	}
	p, err := s.packets.GetPacket(c.Request.Context(), id, userID(c))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, packetView(p))
}
