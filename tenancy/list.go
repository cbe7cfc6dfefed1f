package tenancy

import (
	"maps"
	"slices"
)

// TenantIDs returns the ids of every tenant the directory knows, sorted.
func (d *Directory) TenantIDs() []string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return slices.Sorted(maps.Keys(d.tenants))
}
