package http

import (
	nethttp "net/http"
	"time"

	"github.com/grab-engine/grab/engine/campaign"

	"github.com/gin-gonic/gin"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/errs"
)

type createCampaignRequest struct {
	Ref          *string `json:"ref"`
	Name         *string `json:"name"`
	Budget       *Money  `json:"budget"`
	AwardCount   *int    `json:"award_count"`
	AwardMin     *Money  `json:"award_min"`
	AwardMax     *Money  `json:"award_max"`
	PerUserLimit *int    `json:"per_user_limit"`
	StartsAt     *string `json:"starts_at"`
	EndsAt       *string `json:"ends_at"`
}

type campaignResponse struct {
	CampaignID   int64        `json:"campaign_id"`
	Ref          *string      `json:"ref"`
	Name         string       `json:"name"`
	Budget       Money        `json:"budget"`
	UsedAmount   Money        `json:"used_amount"`
	AccAmount    Money        `json:"acc_amount"`
	AwardCount   int          `json:"award_count"`
	AwardMin     Money        `json:"award_min"`
	AwardMax     Money        `json:"award_max"`
	PerUserLimit int          `json:"per_user_limit"`
	StartsAt     string       `json:"starts_at"`
	EndsAt       string       `json:"ends_at"`
	CreatedAt    string       `json:"created_at"`
	Status       string       `json:"status"`
	Awarded      int          `json:"awarded"`
	Remaining    int          `json:"remaining"`
	Payouts      payoutCounts `json:"payouts"`
}

type payoutCounts struct {
	Received       int `json:"received"`
	Transferring   int `json:"transferring"`
	Transferred    int `json:"transferred"`
	NeedsAttention int `json:"needs_attention"`
}

// awardResponse is an award as its owner sees it: the grab's answer, the
// receive's, an item of the list, and the "award" of a PAYOUT_IN_PROGRESS error.
type awardResponse struct {
	CampaignID    int64   `json:"campaign_id"`
	Seq           int     `json:"seq"`
	Amount        Money   `json:"amount"`
	Repeat        bool    `json:"repeat"`
	Payout        string  `json:"payout"`
	AwardedAt     string  `json:"awarded_at"`
	TransferredAt *string `json:"transferred_at"`
}

type awardsResponse struct {
	CampaignID int64           `json:"campaign_id"`
	Awards     []awardResponse `json:"awards"`
}

func campaignView(c campaign.Campaign) campaignResponse {
	v := campaignResponse{CampaignID: c.ID, Name: c.Name, Budget: Money(c.Budget), UsedAmount: Money(c.UsedAmount),
		AccAmount: Money(c.AccAmount), AwardCount: c.AwardCount, AwardMin: Money(c.AwardMin), AwardMax: Money(c.AwardMax),
		PerUserLimit: c.PerUserLimit, StartsAt: formatTime(c.StartsAt), EndsAt: formatTime(c.EndsAt),
		CreatedAt: formatTime(c.CreatedAt), Status: c.Status, Awarded: c.Awarded, Remaining: c.Remaining,
		Payouts: payoutCounts{Received: c.Payouts[campaign.PayoutReceived], Transferring: c.Payouts[campaign.PayoutTransferring],
			Transferred: c.Payouts[campaign.PayoutTransferred], NeedsAttention: c.Payouts[campaign.PayoutNeedsAttention]}}
	if c.Ref != "" {
		v.Ref = &c.Ref
	}
	return v
}

func awardView(a campaign.Award) awardResponse {
	return awardResponse{CampaignID: a.CampaignID, Seq: a.Seq, Amount: Money(a.Amount), Repeat: a.Repeat, Payout: a.Payout,
		AwardedAt: formatTime(a.AwardedAt), TransferredAt: optTime(a.TransferredAt)}
}

func (s *server) createCampaign(c *gin.Context) {
	var req createCampaignRequest
	if err := decodeBody(c, &req); err != nil {
		s.fail(c, err)
		return
	}
	nc, err := req.toEngine()
	if err != nil {
		s.fail(c, err)
		return
	}
	camp, created, err := s.campaigns.CreateCampaign(c.Request.Context(), nc)
	if err != nil {
		s.fail(c, err)
		return
	}
	status := nethttp.StatusCreated
	if !created {
		status = nethttp.StatusOK // the same ref and content again: the first campaign
	}
	c.JSON(status, campaignView(camp))
}

// toEngine checks presence and JSON-level shape; the rule itself (amounts,
// counts, the window) is the engine's.
func (r createCampaignRequest) toEngine() (campaign.NewCampaign, error) {
	var nc campaign.NewCampaign
	var err error
	if nc.Name, err = requireString("name", r.Name); err != nil {
		return nc, err
	}
	if r.Ref != nil {
		if *r.Ref == "" {
			return nc, invalid("ref must not be empty; leave it out for no idempotency")
		}
		nc.Ref = *r.Ref
	}
	for _, m := range []struct {
		name string
		v    *Money
		dst  *int64
	}{{"budget", r.Budget, &nc.Budget}, {"award_min", r.AwardMin, &nc.AwardMin}, {"award_max", r.AwardMax, &nc.AwardMax}} {
		if *m.dst, err = requireMoney(m.name, m.v); err != nil {
			return nc, err
		}
	}
	if r.AwardCount == nil {
		return nc, invalid("award_count is required")
	}
	if nc.AwardCount = *r.AwardCount; nc.AwardCount < 1 {
		return nc, invalid("award_count must be at least 1")
	}
	if r.PerUserLimit != nil {
		// Absent means 1; an explicit 0 is a mistake, not "absent".
		if nc.PerUserLimit = *r.PerUserLimit; nc.PerUserLimit < 1 {
			return nc, invalid("per_user_limit must be at least 1")
		}
	}
	if nc.StartsAt, err = requireTime("starts_at", r.StartsAt); err != nil {
		return nc, err
	}
	if nc.EndsAt, err = requireTime("ends_at", r.EndsAt); err != nil {
		return nc, err
	}
	return nc, nil
}

func requireTime(name string, v *string) (time.Time, error) {
	if v == nil {
		return time.Time{}, invalid("%s is required", name)
	}
	t, err := time.Parse(time.RFC3339, *v)
	if err != nil {
		return time.Time{}, invalid("%s must be an RFC 3339 time such as 2026-06-01T00:00:00Z", name)
	}
	return t, nil
}

func (s *server) getCampaign(c *gin.Context) {
	id, err := pathID(c, "id")
	if err != nil {
		s.fail(c, err)
		return
	}
	camp, err := s.campaigns.GetCampaign(c.Request.Context(), id)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, campaignView(camp))
}

func (s *server) grabCampaign(c *gin.Context) {
	code := errs.CodeInternal // what a panic would have answered
	defer func() { s.m.campaignGrabs.WithLabelValues(code).Inc() }()
	// The grab takes no body; whatever is sent is ignored.
	id, err := pathID(c, "id")
	if err != nil {
		code = errs.CodeInvalidArgument
		s.fail(c, err)
		return
	}
	a, err := s.campaigns.GrabCampaign(c.Request.Context(), id, userID(c))
	if err != nil {
		s.fail(c, err)
		code = c.GetString(ctxErrorCode)
		return
	}
	code = "OK"
	c.JSON(nethttp.StatusOK, awardView(a))
}

func (s *server) receiveAward(c *gin.Context) {
	id, seq, ok := s.awardPath(c)
	if !ok {
		return
	}
	a, err := s.campaigns.Receive(c.Request.Context(), id, seq, userID(c))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, awardView(a))
}

// retryPayout is a person's retry of a parked (needs_attention) payout.
func (s *server) retryPayout(c *gin.Context) {
	id, seq, ok := s.awardPath(c)
	if !ok {
		return
	}
	if err := decodeOptionalEmpty(c); err != nil {
		s.fail(c, err)
		return
	}
	a, err := s.campaigns.RetryPayout(c.Request.Context(), id, seq)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, awardView(a))
}

// awardPath reads /campaigns/{id}/awards/{seq}; on a bad one it has answered.
func (s *server) awardPath(c *gin.Context) (campaignID int64, seq int, ok bool) {
	id, err := pathID(c, "id")
	if err != nil {
		s.fail(c, err)
		return 0, 0, false
	}
	n, err := pathID(c, "seq")
	if err != nil {
		s.fail(c, err)
		return 0, 0, false
	}
	if n > campaign.MaxAwards {
		s.fail(c, engine.ErrNotFound) // no campaign has that many awards
		return 0, 0, false
	}
	return id, int(n), true
}

func (s *server) myAwards(c *gin.Context) {
	id, err := pathID(c, "id")
	if err != nil {
		s.fail(c, err)
		return
	}
	awards, err := s.campaigns.MyAwards(c.Request.Context(), id, userID(c))
	if err != nil {
		s.fail(c, err)
		return
	}
	v := awardsResponse{CampaignID: id, Awards: make([]awardResponse, 0, len(awards))}
	for _, a := range awards {
		v.Awards = append(v.Awards, awardView(a))
	}
	c.JSON(nethttp.StatusOK, v)
}
