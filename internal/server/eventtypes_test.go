package server

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

// TestEventTypesDocumented: the OpenAPI document's Event.type lists
// exactly the types the event stream publishes. The web console's test
// holds the stream it opens to that list, so that every view (the
// migrations pages among them) gets the events it follows.
func TestEventTypesDocumented(t *testing.T) {
	t.Parallel()
	var doc struct {
		Components struct {
			Schemas struct {
				Event struct {
					Properties struct {
						Type struct {
							Enum []string `json:"enum"`
						} `json:"type"`
					} `json:"properties"`
				} `json:"Event"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatalf("decoding the OpenAPI document: %v", err)
	}
	documented := slices.Sorted(slices.Values(doc.Components.Schemas.Event.Properties.Type.Enum))
	published := slices.Sorted(slices.Values(eventTypes))
	if !slices.Equal(documented, published) {
		t.Errorf("Event.type in the OpenAPI document is %v; the stream publishes %v", documented, published)
	}
}
