package analytics

import "testing"

func TestJobCacheForgetsTheOldestFirst(t *testing.T) {
	t.Parallel()
	c := newJobCache(2)
	a, b, d := jobKey{"t", "a"}, jobKey{"t", "b"}, jobKey{"t", "d"}
	c.put(a, jobTarget{queue: "qa"})
	c.put(b, jobTarget{queue: "qb"})
	c.put(a, jobTarget{queue: "qa2"}) // an update is not a new entry
	c.put(d, jobTarget{queue: "qd"})
	if _, ok := c.get(a); ok {
		t.Error("a: still cached, want forgotten (the oldest)")
	}
	for k, want := range map[jobKey]string{b: "qb", d: "qd"} {
		if got, ok := c.get(k); !ok || got.queue != want {
			t.Errorf("%v: got %q, %v; want %q", k, got.queue, ok, want)
		}
	}
	if _, ok := c.get(jobKey{"other", "b"}); ok {
		t.Error("another tenant's job b: cached, want absent")
	}
}
