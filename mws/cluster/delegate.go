package cluster

import (
	"time"

	"github.com/hashicorp/memberlist"
)

const (
	// maxBroadcastClaims bounds the claims in one gossiped update (a
	// sender puts one in each).
	maxBroadcastClaims = 64
	// maxQueuedBroadcasts bounds the gossip queue; what is pruned reaches
	// peers by push-pull instead.
	maxQueuedBroadcasts = 4096
)

// delegate implements memberlist.Delegate. Memberlist calls it from its
// packet and stream goroutines, sometimes under its node lock, so nothing
// here blocks or calls back into memberlist.
type delegate struct {
	c *Cluster
}

var _ memberlist.Delegate = delegate{}

// NodeMeta implements memberlist.Delegate.
func (d delegate) NodeMeta(limit int) []byte {
	b := d.c.localMeta().encode()
	if len(b) > limit { // Config.Validate makes this unreachable
		d.c.log.Error("cluster: node metadata too large", "bytes", len(b), "limit", limit)
		return nil
	}
	return b
}

// NotifyMsg implements memberlist.Delegate.
func (d delegate) NotifyMsg(b []byte) {
	m, err := decodeMessage(b, maxBroadcastClaims)
	if err != nil {
		d.c.log.Warn("cluster: dropping message", "err", err)
		return
	}
	switch m.kind {
	case msgLeave:
		d.c.members.noteLeaving(m.name, m.instance)
	case msgClaims:
		for _, c := range d.c.mergeRemote(m.claims) {
			// Pass on what was news here: epidemic spread beyond the
			// writer's own retransmissions.
			d.c.queueClaim(c)
		}
	default:
		d.c.log.Warn("cluster: unexpected message type", "type", m.kind)
	}
}

// GetBroadcasts implements memberlist.Delegate.
func (d delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.c.queue.GetBroadcasts(overhead, limit)
}

// LocalState implements memberlist.Delegate.
func (d delegate) LocalState(join bool) []byte {
	return d.c.dir.state()
}

// MergeRemoteState implements memberlist.Delegate.
func (d delegate) MergeRemoteState(b []byte, join bool) {
	if len(b) == 0 {
		return
	}
	m, err := decodeMessage(b, maxStateBytes/minClaimBytes)
	if err != nil || m.kind != msgState {
		d.c.log.Warn("cluster: dropping remote state", "err", err, "type", m.kind)
		return
	}
	d.c.mergeRemote(m.claims)
}

// mergeRemote applies claims from a peer and returns those that changed
// the directory.
func (c *Cluster) mergeRemote(cs []claim) []claim {
	horizon := uint64(time.Now().Add(maxFutureSkew).UnixNano())
	var changed []claim
	for _, cl := range cs {
		if cl.ts > horizon {
			c.log.Warn("cluster: dropping directory entry from the future",
				"mws", cl.mws, "device", cl.device, "ahead", time.Duration(cl.ts-horizon)+maxFutureSkew)
			continue
		}
		c.dir.clock.observe(cl.ts)
		ok, err := c.dir.merge(cl)
		if err != nil {
			c.log.Warn("cluster: dropping directory entry", "mws", cl.mws, "device", cl.device, "err", err)
			continue
		}
		if ok {
			changed = append(changed, cl)
		}
	}
	return changed
}

// queueClaim gossips one claim; a newer claim for the same (user, device,
// mws) replaces a queued older one.
func (c *Cluster) queueClaim(cl claim) {
	c.queue.QueueBroadcast(&namedBroadcast{
		name: "d\x00" + cl.user + "\x00" + cl.device + "\x00" + cl.mws,
		msg:  encodeClaims(msgClaims, []claim{cl}),
	})
	if c.queue.NumQueued() > maxQueuedBroadcasts {
		c.queue.Prune(maxQueuedBroadcasts)
	}
}

type namedBroadcast struct {
	name string
	msg  []byte
}

var _ memberlist.NamedBroadcast = (*namedBroadcast)(nil)

func (b *namedBroadcast) Invalidates(o memberlist.Broadcast) bool {
	nb, ok := o.(memberlist.NamedBroadcast)
	return ok && nb.Name() == b.name
}
func (b *namedBroadcast) Name() string    { return b.name }
func (b *namedBroadcast) Message() []byte { return b.msg }
func (b *namedBroadcast) Finished()       {}
