// Package eventlog is Sluice's access to its Kafka log: the topic catalogue,
// the event envelope, the producers and the transactional consumer runner.
//
// # Guarantees
//
// Appender.Append returns nil only after every record was acknowledged by all
// in-sync replicas (acks=all) through an idempotent producer: an
// acknowledged record survives the loss of any Sluice process, and a retried
// produce never writes a record twice. AppendAtomic writes several records in
// one Kafka transaction: consumers reading committed data (every Sluice
// consumer) see all of them or none.
//
// Runner consumes a topic in a consumer group with one goroutine per
// assigned partition and up to RunnerConfig.MaxInFlight records of one
// partition processed concurrently. The records a handler returns are
// produced in a Kafka transaction together with the group's offsets; the
// offset committed for a partition is always the lowest offset whose record
// has not finished, so a crash never skips unfinished work. Records that
// finished above that offset are handled again after a crash or when their
// partition moves to another member, so handlers must be idempotent in
// effect (deliveries carry a stable webhook-id; events carry ids derived
// from their source record, see DeriveID). A transaction that aborts is
// not redone from the log: its outcomes go into the next transaction. A
// partition is handed back on rebalance only after its in-flight handlers
// have returned; a stopping runner lets handlers finish (until Stop's
// context ends) and commits their outcomes before it leaves the group.
package eventlog
