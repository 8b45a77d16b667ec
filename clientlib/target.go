package clientlib

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// Offer is a handoff offered to this device.
type Offer struct {
	HandoffID  string
	User       string
	App        string
	Labels     []string
	FromDevice string
	Expires    time.Time
}

// Summary describes the state elements of an accepted handoff.
type Summary struct {
	HandoffID string
	Elements  []*mwsv1.ElementSummary
	// XML is the same summary as an XML document.
	XML string
}

// DeliveredElement is a state element as the target receives it.
type DeliveredElement struct {
	Name        string
	Kind        ElementKind
	ContentType string
	Data        []byte
	// Digest of the server object's original at the MWS (server objects).
	Digest string
	// Adapted reports that the MWS adapted the object for this device.
	Adapted bool
	// StreamID and StreamOffset locate an open stream to resume.
	StreamID     string
	StreamOffset uint64
}

// Resumed is a session that arrived on this device.
type Resumed struct {
	Session  *Session
	Labels   []string
	Elements []DeliveredElement
	Timings  Timings
}

// Conn resumes the stream of a StreamState element.
func (r *Resumed) Conn(ctx context.Context, e DeliveredElement) (*Conn, error) {
	if e.Kind != StreamState {
		return nil, errors.New("clientlib: element is not a stream")
	}
	return r.Session.Resume(ctx, e.StreamID, e.StreamOffset)
}

// Target is this device's side of handoffs. Every callback runs on its own
// goroutine per handoff and may block.
type Target struct {
	// Accept decides on an offer (prepare the skeleton session here);
	// nil accepts every offer. A refusal's reason is told to the source.
	Accept func(Offer) (ok bool, reason string)
	// Select picks the elements to fetch; nil (or an empty result) takes
	// all.
	Select func(Summary) []string
	// Resumed receives each session that arrives.
	Resumed func(*Resumed)
	// Failed receives a handoff that failed on this side (may be nil).
	Failed func(handoffID string, err error)
}

// Serve runs this device's event channel — it makes the device "online" —
// and handles handoff offers with t until ctx ends or the channel fails.
func (c *Client) Serve(ctx context.Context, t Target) error {
	if err := c.loggedIn(); err != nil {
		return err
	}
	var mu sync.Mutex
	// The resume token of each accepted offer. The summary can arrive
	// before AnswerOffer has returned the token, so its entry is made when
	// the offer arrives and the summary waits for it.
	tokens := map[string]chan string{}
	var wg sync.WaitGroup
	defer wg.Wait()
	fail := func(id string, err error) {
		if t.Failed != nil {
			t.Failed(id, err)
		}
	}
	err := c.eventLoop(ctx, func(ev *mwsv1.Event) error {
		switch m := ev.Msg.(type) {
		case *mwsv1.Event_Offer:
			o := m.Offer
			tokCh := make(chan string, 1)
			mu.Lock()
			tokens[o.HandoffId] = tokCh
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer close(tokCh)
				ok, reason := true, ""
				if t.Accept != nil {
					ok, reason = t.Accept(Offer{HandoffID: o.HandoffId, User: o.User, App: o.App, Labels: o.Labels, FromDevice: o.FromDevice, Expires: time.Unix(0, o.ExpiresUnixNano)})
				}
				r, err := c.homeRoute().api.AnswerOffer(ctx, &mwsv1.AnswerOfferRequest{Token: o.Token, Accept: ok, Reason: reason})
				if err != nil || !ok {
					// No summary will follow.
					mu.Lock()
					if tokens[o.HandoffId] == tokCh {
						delete(tokens, o.HandoffId)
					}
					mu.Unlock()
				}
				if err != nil {
					fail(o.HandoffId, err)
					return
				}
				if ok {
					tokCh <- r.ResumeToken
				}
			}()
		case *mwsv1.Event_Summary:
			sum := m.Summary
			mu.Lock()
			tokCh := tokens[sum.HandoffId]
			delete(tokens, sum.HandoffId)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				var tok string
				if tokCh != nil {
					select {
					case tok = <-tokCh:
					case <-ctx.Done():
						return
					}
				}
				if tok == "" {
					fail(sum.HandoffId, errors.New("clientlib: summary for a handoff this device did not accept"))
					return
				}
				var sel []string
				if t.Select != nil {
					sel = t.Select(Summary{HandoffID: sum.HandoffId, Elements: sum.Elements, XML: sum.Xml})
				}
				r, err := c.resume(ctx, tok, sel)
				if err != nil {
					fail(sum.HandoffId, err)
					return
				}
				if t.Resumed != nil {
					t.Resumed(r)
				}
			}()
		}
		return nil
	})
	if errors.Is(err, io.EOF) || ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// resume fetches the selected elements with a resume token and returns the
// session now owned by this device.
func (c *Client) resume(ctx context.Context, token string, sel []string) (*Resumed, error) {
	return c.resumeAt(ctx, c.homeRoute(), token, sel)
}

// resumeAt is resume at the MWS of home, which issued the token.
func (c *Client) resumeAt(ctx context.Context, home *route, token string, sel []string) (*Resumed, error) {
	st, err := home.api.Resume(ctx, &mwsv1.ResumeRequest{Token: token, Select: sel})
	if err != nil {
		return nil, err
	}
	r := &Resumed{}
	for {
		m, err := st.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("clientlib: resume ended before the session was handed over")
			}
			return nil, err
		}
		if e := m.GetElement(); e != nil {
			r.Elements = append(r.Elements, DeliveredElement{Name: e.Name, Kind: e.Kind, ContentType: e.ContentType, Data: e.Data,
				Digest: e.Digest, Adapted: e.Adapted, StreamID: e.StreamId, StreamOffset: e.StreamOffset})
			continue
		}
		if done := m.GetResumed(); done != nil {
			r.Session = &Session{c: c, id: done.SessionId, app: done.App, key: done.SessionKey, r: home}
			c.track(r.Session)
			r.Labels = done.Labels
			r.Timings = timingsFrom(done.Timings)
			return r, nil
		}
	}
}

// DeviceInfo is one of the user's devices.
type DeviceInfo struct {
	Name     string
	Class    string
	Online   bool
	MWS      string
	LastSeen time.Time
}

// Devices lists the user's devices: the possible handoff targets.
func (c *Client) Devices(ctx context.Context) ([]DeviceInfo, error) {
	if err := c.loggedIn(); err != nil {
		return nil, err
	}
	r, err := c.homeRoute().api.ListDevices(ctx, &mwsv1.ListDevicesRequest{})
	if err != nil {
		return nil, err
	}
	out := make([]DeviceInfo, 0, len(r.Devices))
	for _, d := range r.Devices {
		out = append(out, DeviceInfo{Name: d.Name, Class: d.DeviceClass, Online: d.Online, MWS: d.Mws, LastSeen: time.Unix(0, d.LastSeenUnixNano)})
	}
	return out, nil
}

// Reclaim takes back a session bound to this device from the state the MWS
// stored (after the app restarted, or after a handoff that failed once this
// device had dropped its state).
func (c *Client) Reclaim(ctx context.Context, sessionID string) (*Resumed, error) {
	if err := c.loggedIn(); err != nil {
		return nil, err
	}
	r, err := c.homeRoute().api.Reclaim(ctx, &mwsv1.ReclaimRequest{SessionId: sessionID})
	if err != nil {
		return nil, err
	}
	return c.resume(ctx, r.ResumeToken, nil)
}
