// Package tenancy knows Sluice's tenants and API keys. They live in the
// compacted config topic; every node folds the whole topic into memory with
// a Directory, so resolving a key costs a map lookup. Keys are stored as
// their SHA-256 only: the topic never holds a usable key.
package tenancy
