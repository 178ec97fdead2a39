package state

// ServiceIndex returns the index a health or catalog query of service name
// would report: it rises whenever anything those queries return changes
// (the service's instances, their checks, and their nodes and node-level
// checks). Callers may cache such a result and reuse it while the index
// stays the same and AbandonCh stays open.
func (s *Store) ServiceIndex(name string) uint64 {
	r := s.Read()
	defer r.Abort()
	if idx := maxIndex(r.tx, nil, serviceIndexKey(name)); idx != 0 {
		return idx
	}
	return maxIndex(r.tx, nil, tableServices)
}
