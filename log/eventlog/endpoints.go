package eventlog

import (
	"github.com/twmb/franz-go/pkg/kgo"

	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
)

// Endpoint event types, as written in Event.type.
const (
	TypeEndpointDisabled      = "endpoint.disabled"
	TypeEndpointEnabled       = "endpoint.enabled"
	TypeEndpointMessageParked = "endpoint.message_parked"
)

// Parked holds deliveries waiting for a disabled endpoint, keyed by job
// id; they are released to Events once the endpoint is enabled again.
func (t Topics) Parked() string { return t.Prefix + "parked" }

// EndpointKey is the record key of events about an endpoint as a whole
// (endpoint.disabled, endpoint.enabled): they carry no job id.
func EndpointKey(endpointID string) string { return "endpoint/" + endpointID }

// setEndpointBody sets an endpoint event body on ev, for NewEvent. Bodies
// about an endpoint as a whole leave the job id empty; a parked message's
// event names its job.
func setEndpointBody(ev *eventv1.Event, body any) bool {
	switch b := body.(type) {
	case *eventv1.EndpointDisabled:
		ev.Type, ev.Body = TypeEndpointDisabled, &eventv1.Event_EndpointDisabled{EndpointDisabled: b}
	case *eventv1.EndpointEnabled:
		ev.Type, ev.Body = TypeEndpointEnabled, &eventv1.Event_EndpointEnabled{EndpointEnabled: b}
	case *eventv1.EndpointMessageParked:
		ev.Type, ev.Body = TypeEndpointMessageParked, &eventv1.Event_EndpointMessageParked{EndpointMessageParked: b}
	default:
		return false
	}
	return true
}

// EncodeEndpointEvent turns an event about an endpoint as a whole into a
// record for topic, keyed by EndpointKey.
func EncodeEndpointEvent(topic, endpointID string, ev *eventv1.Event) (*kgo.Record, error) {
	rec, err := EncodeEvent(topic, ev)
	if err != nil {
		return nil, err
	}
	rec.Key = []byte(EndpointKey(endpointID))
	return rec, nil
}
