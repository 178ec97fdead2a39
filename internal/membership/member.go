package membership

import (
	"strconv"

	"github.com/hashicorp/serf/serf"
)

// MemberStatus is a member's gossip state. The values are Consul's
// numeric codes (api.AgentMember.Status) and serf's.
type MemberStatus int

// Member states.
const (
	StatusNone    MemberStatus = 0
	StatusAlive   MemberStatus = 1
	StatusLeaving MemberStatus = 2
	StatusLeft    MemberStatus = 3
	StatusFailed  MemberStatus = 4
)

// String returns the name `consul members` prints.
func (s MemberStatus) String() string {
	switch s {
	case StatusNone:
		return "none"
	case StatusAlive:
		return "alive"
	case StatusLeaving:
		return "leaving"
	case StatusLeft:
		return "left"
	case StatusFailed:
		return "failed"
	}
	return "status(" + strconv.Itoa(int(s)) + ")"
}

// Member is one member of a pool as this agent sees it. Its fields match
// api.AgentMember.
type Member struct {
	Name   string // in a WAN pool "<node>.<dc>"
	Addr   string // advertised IP
	Port   uint16 // advertised gossip port
	Tags   map[string]string
	Status MemberStatus

	// Memberlist protocol versions, then serf's (the "delegate").
	ProtocolMin, ProtocolMax, ProtocolCur uint8
	DelegateMin, DelegateMax, DelegateCur uint8
}

func fromSerf(m serf.Member) Member {
	out := Member{
		Name:        m.Name,
		Port:        m.Port,
		Status:      MemberStatus(m.Status),
		Tags:        make(map[string]string, len(m.Tags)),
		ProtocolMin: m.ProtocolMin,
		ProtocolMax: m.ProtocolMax,
		ProtocolCur: m.ProtocolCur,
		DelegateMin: m.DelegateMin,
		DelegateMax: m.DelegateMax,
		DelegateCur: m.DelegateCur,
	}
	if m.Addr != nil {
		out.Addr = m.Addr.String()
	}
	for k, v := range m.Tags {
		out.Tags[k] = v
	}
	return out
}

func fromSerfAll(ms []serf.Member) []Member {
	out := make([]Member, len(ms))
	for i, m := range ms {
		out[i] = fromSerf(m)
	}
	return out
}
