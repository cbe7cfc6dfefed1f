package analytics

// jobTarget is what the sink remembers of a job to fill in the rows of
// events that do not name the job's queue and target.
type jobTarget struct {
	queue, endpointID, url string
}

type jobKey struct{ tenantID, jobID string }

// jobCache remembers the targets of the jobs seen last, up to a size;
// beyond it the job remembered first is forgotten first.
type jobCache struct {
	size  int
	m     map[jobKey]jobTarget
	order []jobKey // ring of keys in insertion order
	next  int
}

func newJobCache(size int) *jobCache {
	return &jobCache{size: size, m: make(map[jobKey]jobTarget, min(size, 1024))}
}

func (c *jobCache) get(k jobKey) (jobTarget, bool) {
	t, ok := c.m[k]
	return t, ok
}

func (c *jobCache) put(k jobKey, t jobTarget) {
	if _, ok := c.m[k]; ok {
		c.m[k] = t
		return
	}
	if len(c.order) < c.size {
		c.order = append(c.order, k)
	} else {
		delete(c.m, c.order[c.next])
		c.order[c.next] = k
		c.next = (c.next + 1) % c.size
	}
	c.m[k] = t
}
