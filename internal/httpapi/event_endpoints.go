package httpapi

import (
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/hashicorp/go-uuid"
	"github.com/trellis-mesh/trellis/internal/structs"
)

func (a *API) eventFire(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	name := r.PathValue("name")
	if name == "" {
		return nil, badRequest("Missing name")
	}
	q := r.URL.Query()
	payload, err := io.ReadAll(io.LimitReader(r.Body, 100*1024+1))
	if err != nil {
		return nil, badRequest("reading body: %v", err)
	}
	if len(payload) > 100*1024 {
		return nil, httpError{code: http.StatusRequestEntityTooLarge, msg: "User event payload exceeds 100 KiB"}
	}
	id, err := uuid.GenerateUUID()
	if err != nil {
		return nil, err
	}
	ev := &structs.UserEvent{
		ID: id, Name: name, NodeFilter: q.Get("node"), ServiceFilter: q.Get("service"),
		TagFilter: q.Get("tag"), Version: 1,
	}
	if len(payload) > 0 {
		ev.Payload = payload
	}
	if err := a.deps.Agent.FireEvent(ev); err != nil {
		return nil, err
	}
	return ev, nil
}

// eventList answers /v1/event/list. As in Consul, its index is derived
// from the ID of the newest matching event (see eventIndex), so it is not
// monotonic: a blocking list waits while the index equals ?index=.
func (a *API) eventList(w http.ResponseWriter, r *http.Request) (any, error) {
	o, err := parseQuery(r)
	if err != nil {
		return nil, err
	}
	name := r.URL.Query().Get("name")
	ctx := r.Context()
	var timeout <-chan struct{}
	if o.minIndex > 0 {
		c, cancel := waitContext(ctx, o.wait)
		defer cancel()
		timeout = c.Done()
	}
	for {
		events, next := a.deps.Agent.Events()
		out := []*structs.UserEvent{}
		for _, e := range events {
			if name == "" || e.Name == name {
				out = append(out, e)
			}
		}
		// Never 0, which would make watchers spin.
		idx := uint64(1)
		if n := len(out); n > 0 {
			idx = eventIndex(out[n-1].ID)
		}
		if o.minIndex == 0 || idx != o.minIndex {
			w.Header().Set("X-Consul-Index", strconv.FormatUint(idx, 10))
			a.setMeta(w, o)
			return out, nil
		}
		select {
		case <-next:
		case <-timeout:
			o.minIndex = 0
		}
	}
}

// eventIndex turns an event ID (a UUID) into the index clients expect:
// the XOR of its first 64 and last 64 bits, which the Go client's
// Event.IDToIndex computes to find the events it has already seen.
func eventIndex(id string) uint64 {
	hex := strings.ReplaceAll(id, "-", "")
	if len(hex) != 32 {
		return 1
	}
	lo, err1 := strconv.ParseUint(hex[:16], 16, 64)
	hi, err2 := strconv.ParseUint(hex[16:], 16, 64)
	if err1 != nil || err2 != nil {
		return 1
	}
	return lo ^ hi
}
