package eventlog

import (
	"crypto/sha256"
	"encoding/binary"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"
)

// NewID returns a new time-ordered unique id (a UUIDv7 string). Ids made
// later sort after ids made earlier, to the millisecond.
func NewID() string {
	return uuid.Must(uuid.NewV7()).String()
}

// DeriveID returns the id of the n-th event produced while handling rec. It
// is the same every time the record is handled, so an event produced again
// after a crash carries the id of its first copy and folds drop it.
func DeriveID(rec *kgo.Record, n int) string {
	h := sha256.New()
	h.Write([]byte(rec.Topic))
	var b [16]byte
	binary.BigEndian.PutUint32(b[0:4], uint32(rec.Partition))
	binary.BigEndian.PutUint64(b[4:12], uint64(rec.Offset))
	binary.BigEndian.PutUint32(b[12:16], uint32(n))
	h.Write(b[:])
	var id uuid.UUID
	copy(id[:], h.Sum(nil))
	id[6] = (id[6] & 0x0f) | 0x80 // version 8: custom
	id[8] = (id[8] & 0x3f) | 0x80 // RFC 4122 variant
	return id.String()
}

// KeyedJobID returns the id of the job a tenant enqueues under an
// idempotency key. Every node derives the same id from the same key, so
// duplicates racing through different nodes land on one partition under
// one id, and the first job.enqueued for the id in log order wins.
func KeyedJobID(tenantID, key string) string {
	h := sha256.New()
	h.Write([]byte("sluice/idempotency-key\x00"))
	h.Write([]byte(tenantID))
	h.Write([]byte{0})
	h.Write([]byte(key))
	var id uuid.UUID
	copy(id[:], h.Sum(nil))
	id[6] = (id[6] & 0x0f) | 0x80 // version 8: custom
	id[8] = (id[8] & 0x3f) | 0x80 // RFC 4122 variant
	return id.String()
}
