package projections

// SetDeadLetterScan sets the most dead letters one ListDeadLetters page
// of s examines.
func SetDeadLetterScan(s *Store, n int) { s.deadScan = n }
