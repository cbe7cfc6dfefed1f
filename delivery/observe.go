package delivery

// endpointLabel names where r's attempt goes, for the Observer: the
// endpoint id for an endpoint target, else the host (host:port) of the
// target URL. Hosts, unlike full URLs, stay few.
func (r run) endpointLabel() string {
	if r.endpoint != nil {
		return r.endpoint.id
	}
	if id := r.spec.GetTarget().GetEndpointId(); id != "" {
		return id
	}
	return hostOf(r.spec.GetTarget().GetUrl())
}
