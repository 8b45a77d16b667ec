package testbed

import (
	"encoding/json"
	"fmt"
	"os"
)

// jsonReport is the document --json writes.
type jsonReport struct {
	Seed   uint64 `json:"seed"`
	Images int    `json:"images"`
	// Requests has one record per fetch: two per planned request, the
	// direct and the imash one, in the order they were made.
	Requests []record `json:"requests"`
	// Streams has one record per raw-stream transfer.
	Streams []streamResult `json:"streams"`
	// Links has one record per device of the links phase.
	Links []linkResult `json:"links"`
	// Cluster is the cluster phase (null when the run stopped before it).
	Cluster *clusterResult `json:"cluster"`
	// Complete is false when the run stopped early; the records then end
	// at the failure.
	Complete bool `json:"complete"`
}

// writeJSON writes the records to the --json file, if one was asked for.
func (res *demoResult) writeJSON() error {
	if res.cfg.JSONFile == "" {
		return nil
	}
	doc := jsonReport{
		Seed:     res.cfg.Seed,
		Images:   res.cfg.Images,
		Requests: res.records,
		Streams:  res.streams,
		Links:    res.links,
		Cluster:  res.cluster,
		Complete: res.phases.total > 0,
	}
	if doc.Requests == nil {
		doc.Requests = []record{}
	}
	if doc.Streams == nil {
		doc.Streams = []streamResult{}
	}
	if doc.Links == nil {
		doc.Links = []linkResult{}
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("--json: %w", err)
	}
	if err := os.WriteFile(res.cfg.JSONFile, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("--json: %w", err)
	}
	return nil
}
