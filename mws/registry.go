package mws

import (
	"slices"
	"strings"
	"sync"
	"time"

	mwsv1 "github.com/imashproject/imash/proto/imash/mws/v1"
)

// registry is each user's device registry with presence: a device is known
// to a user once it logged in as that user, and online while it holds an
// Events channel.
type registry struct {
	mu    sync.Mutex
	users map[string]map[string]*deviceEntry
	// onOnline is called (without the lock) when a device comes online.
	onOnline func(user, device string)
}

type deviceEntry struct {
	name     string
	online   int // open Events channels
	lastSeen time.Time
}

func newRegistry() *registry {
	return &registry{users: map[string]map[string]*deviceEntry{}}
}

func (r *registry) entryLocked(user, device string) *deviceEntry {
	devs := r.users[user]
	if devs == nil {
		devs = map[string]*deviceEntry{}
		r.users[user] = devs
	}
	e := devs[device]
	if e == nil {
		e = &deviceEntry{name: device}
		devs[device] = e
	}
	return e
}

func (r *registry) seen(user, device string) {
	r.mu.Lock()
	r.entryLocked(user, device).lastSeen = time.Now()
	r.mu.Unlock()
}

func (r *registry) online(user, device string, up bool) {
	r.mu.Lock()
	e := r.entryLocked(user, device)
	e.lastSeen = time.Now()
	if up {
		e.online++
	} else if e.online > 0 {
		e.online--
	}
	cb := r.onOnline
	r.mu.Unlock()
	if up && cb != nil {
		cb(user, device)
	}
}

// known reports whether device belongs to user's registry, and whether it
// is online.
func (r *registry) known(user, device string) (known, online bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.users[user][device]
	if e == nil {
		return false, false
	}
	return true, e.online > 0
}

func (r *registry) list(user, mws string, class func(string) string) []*mwsv1.DeviceInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*mwsv1.DeviceInfo
	for _, e := range r.users[user] {
		d := &mwsv1.DeviceInfo{Name: e.name, DeviceClass: class(e.name), Online: e.online > 0, LastSeenUnixNano: e.lastSeen.UnixNano()}
		if d.Online {
			d.Mws = mws
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b *mwsv1.DeviceInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}
