package httpapi

import (
	"io"
	"net/http"
	"strconv"

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

// eventList answers /v1/event/list. Its index is the LTime of the newest
// event, so a blocking list wakes at the next event.
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
		var idx uint64
		if n := len(events); n > 0 {
			idx = events[n-1].LTime
		}
		if o.minIndex == 0 || idx > o.minIndex {
			out := []*structs.UserEvent{}
			for _, e := range events {
				if name == "" || e.Name == name {
					out = append(out, e)
				}
			}
			w.Header().Set("X-Consul-Index", strconv.FormatUint(max(idx, 1), 10))
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
