package cluster

import (
	"encoding/binary"
	"sync"
	"time"
)

// DeviceEntry says where a device is served.
type DeviceEntry struct {
	// MWS is the node serving the device, or the last one that did.
	MWS string
	// Online is true while that MWS says it serves the device and is
	// alive in this run: it turns false when the MWS reports the device
	// gone, dies, leaves or restarts.
	Online bool
	// Updated is when MWS wrote the entry (its clock).
	Updated time.Time
}

// maxFutureSkew rejects directory updates stamped further ahead of this
// node's clock, so one node with a wild clock cannot pin entries forever.
const maxFutureSkew = 10 * time.Minute

// hlc is a hybrid logical clock: wall time in Unix nanoseconds, pushed
// past every timestamp seen so a write that follows another one it knows
// about always wins, whatever the clocks say.
type hlc struct {
	mu   sync.Mutex
	last uint64
}

func (c *hlc) now() uint64 {
	wall := uint64(time.Now().UnixNano())
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = max(wall, c.last+1)
	return c.last
}

func (c *hlc) observe(ts uint64) {
	c.mu.Lock()
	c.last = max(c.last, ts)
	c.mu.Unlock()
}

// directory is the cluster-wide device directory: a map of last-writer-wins
// claims keyed by (user, device, mws), so merging is order-independent and
// every node converges on the same claims. Reads resolve a device's claims:
// the newest claim of a serving MWS wins, else the newest claim (offline).
type directory struct {
	serving func(mws string, instance uint64) bool // leaf lock, callable under mu
	clock   hlc
	max     int

	mu     sync.Mutex
	byUser map[string]map[string][]claim // user → device → one claim per MWS
	n      int
}

func newDirectory(maxClaims int, serving func(string, uint64) bool) *directory {
	return &directory{
		serving: serving,
		max:     maxClaims,
		byUser:  make(map[string]map[string][]claim),
	}
}

// merge applies c. It reports whether c changed the directory, and
// ErrDirectoryFull if c is a new claim and no entry could be evicted.
func (d *directory) merge(c claim) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	devs := d.byUser[c.user]
	cs := devs[c.device]
	for i := range cs {
		if cs[i].mws == c.mws {
			if !c.newer(cs[i]) {
				return false, nil
			}
			cs[i] = c
			return true, nil
		}
	}
	if d.n >= d.max && !d.evictLocked(c) {
		return false, ErrDirectoryFull
	}
	// Eviction may have removed the user's map; look again.
	if devs = d.byUser[c.user]; devs == nil {
		devs = make(map[string][]claim)
		d.byUser[c.user] = devs
	}
	devs[c.device] = append(devs[c.device], c)
	d.n++
	return true, nil
}

// evictLocked drops the oldest claim that is not online (offline, or its
// MWS is gone), if it is older than incoming. It scans the whole
// directory, which only happens when the directory is full.
func (d *directory) evictLocked(incoming claim) bool {
	var victim *claim
	for _, devs := range d.byUser {
		for _, cs := range devs {
			for i := range cs {
				c := &cs[i]
				if d.online(*c) {
					continue
				}
				if victim == nil || c.ts < victim.ts {
					victim = c
				}
			}
		}
	}
	if victim == nil || (incoming.ts < victim.ts && !d.online(incoming)) {
		return false
	}
	user, device, mws := victim.user, victim.device, victim.mws
	devs := d.byUser[user]
	cs := devs[device]
	for i := range cs {
		if cs[i].mws == mws {
			cs = append(cs[:i], cs[i+1:]...)
			break
		}
	}
	switch {
	case len(cs) > 0:
		devs[device] = cs
	case len(devs) > 1:
		delete(devs, device)
	default:
		delete(d.byUser, user)
	}
	d.n--
	return true
}

func (d *directory) online(c claim) bool {
	return c.online && d.serving(c.mws, c.instance)
}

func (d *directory) resolveLocked(cs []claim) (DeviceEntry, bool) {
	if len(cs) == 0 {
		return DeviceEntry{}, false
	}
	best, bestOnline := cs[0], d.online(cs[0])
	for _, c := range cs[1:] {
		on := d.online(c)
		if on != bestOnline {
			if on {
				best, bestOnline = c, on
			}
			continue
		}
		if c.ts > best.ts || (c.ts == best.ts && c.mws < best.mws) {
			best = c
		}
	}
	return DeviceEntry{MWS: best.mws, Online: bestOnline, Updated: time.Unix(0, int64(best.ts))}, true
}

func (d *directory) lookup(user, device string) (DeviceEntry, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.resolveLocked(d.byUser[user][device])
}

func (d *directory) devices(user string) map[string]DeviceEntry {
	d.mu.Lock()
	defer d.mu.Unlock()
	devs := d.byUser[user]
	out := make(map[string]DeviceEntry, len(devs))
	for dev, cs := range devs {
		if e, ok := d.resolveLocked(cs); ok {
			out[dev] = e
		}
	}
	return out
}

// state encodes every claim for a push-pull, up to maxStateBytes (what
// does not fit reaches the peer by a later sync with another node).
func (d *directory) state() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	var body []byte
	n := 0
	for _, devs := range d.byUser {
		for _, cs := range devs {
			for _, c := range cs {
				next := appendClaim(body, c)
				if len(next)+16 > maxStateBytes {
					return finishState(body, n)
				}
				body, n = next, n+1
			}
		}
	}
	return finishState(body, n)
}

func finishState(body []byte, n int) []byte {
	b := make([]byte, 0, len(body)+11)
	b = append(b, msgState)
	b = binary.AppendUvarint(b, uint64(n))
	return append(b, body...)
}

func (d *directory) size() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n
}
