package process

import (
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"

	pb "github.com/paddockhq/paddock/api/envd/process"
)

// DefaultSubscriberLimit bounds the bytes of output queued for one attached
// stream. When a stream's queue is full, the output readers wait for it to
// make progress (the process is throttled to its slowest live reader, as a
// pipe would throttle it), so memory stays bounded.
const DefaultSubscriberLimit = 4 << 20

// DefaultStallTimeout is how long a full stream may make no progress at all
// before it is dropped with resource_exhausted; a stalled client can
// therefore hold the process's output back at most this long.
const DefaultStallTimeout = 10 * time.Second

// eventOverhead is what every queued event counts on top of its payload, so
// that many tiny events are bounded too.
const eventOverhead = 64

// subscriber is one attached stream's queue of process events. Producers
// (the output readers, the waiter) append without blocking; a reader that
// finds the subscriber over its limit waits in waitRoom for the stream's
// goroutine to send events, or drops the subscriber when it stalls.
type subscriber struct {
	limit int

	mu       sync.Mutex
	events   []queued
	bytes    int           // queued plus taken but not yet sent
	final    bool          // the end event is queued; nothing follows
	err      error         // set when the subscriber was dropped
	detached bool          // the stream went away
	wake     chan struct{} // signalled when events are queued or the subscriber ends
	room     chan struct{} // signalled when events are sent or the subscriber ends
}

// queued is an event and what it counts against the subscriber's limit.
type queued struct {
	ev   *pb.ProcessEvent
	cost int
}

func newSubscriber(limit int) *subscriber {
	if limit <= 0 {
		limit = DefaultSubscriberLimit
	}
	return &subscriber{limit: limit, wake: make(chan struct{}, 1), room: make(chan struct{}, 1)}
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// push queues a data event of n payload bytes. accepted is false when the
// subscriber has ended (the caller must forget it); full is true when the
// queue is now over the limit (the caller should waitRoom before producing
// more).
func (s *subscriber) push(ev *pb.ProcessEvent, n int) (accepted, full bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.final || s.err != nil || s.detached {
		return false, false
	}
	cost := n + eventOverhead
	s.events = append(s.events, queued{ev, cost})
	s.bytes += cost
	notify(s.wake)
	return true, s.bytes > s.limit
}

// waitRoom blocks while the subscriber is over its limit. It returns false
// when the stream sent nothing for stall (it is stalled), true once there is
// room, the subscriber has ended, or abort is closed.
func (s *subscriber) waitRoom(stall time.Duration, abort <-chan struct{}) bool {
	timer := time.NewTimer(stall)
	defer timer.Stop()
	for {
		s.mu.Lock()
		ok := s.bytes <= s.limit || s.final || s.err != nil || s.detached
		s.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-s.room:
			timer.Reset(stall) // progress
		case <-timer.C:
			return false
		case <-abort:
			return true
		}
	}
}

// finish queues the end event (regardless of the limit) and marks the
// subscriber complete.
func (s *subscriber) finish(ev *pb.ProcessEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.final || s.err != nil || s.detached {
		return
	}
	s.events = append(s.events, queued{ev: ev})
	s.final = true
	notify(s.wake)
	notify(s.room)
}

// drop ends the subscriber because it stalled: its queue is discarded and
// its stream fails with resource_exhausted.
func (s *subscriber) drop(stall time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.final || s.err != nil || s.detached {
		return
	}
	s.events = nil
	s.bytes = 0
	s.err = connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
		"stream dropped: the client read nothing of the %d bytes of output queued for it for %v", s.limit, stall))
	notify(s.wake)
	notify(s.room)
}

// detach marks the subscriber's stream as gone, releasing waiting producers.
func (s *subscriber) detach() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.detached = true
	s.events = nil
	s.bytes = 0
	notify(s.room)
}

// take returns the queued events, whether the end event is among them (or was
// already taken), and the error that dropped the subscriber, if any. The
// events keep counting against the limit until reported with sent.
func (s *subscriber) take() (evs []queued, final bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	evs, s.events = s.events, nil
	return evs, s.final, s.err
}

// sent reports that a taken event of the given cost reached the stream:
// progress, and room for producers.
func (s *subscriber) sent(cost int) {
	s.mu.Lock()
	s.bytes -= cost
	if s.bytes < 0 {
		s.bytes = 0 // dropped or detached meanwhile: the budget was reset
	}
	s.mu.Unlock()
	notify(s.room)
}
