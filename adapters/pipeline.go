package adapters

import (
	"context"
	"fmt"
	"image"

	"github.com/imashproject/imash/profiles"
)

// Context is the state one adaptation passes from step to step.
type Context struct {
	Config      Config
	Constraints profiles.Constraints
	// Src and Attrs are the input object and its characterization.
	Src   []byte
	Attrs Attributes
	// Image is the decoded raster, transformed in place by the steps.
	Image image.Image
	// Codec is the output codec (set by decode, changed by convert).
	Codec *Codec
	// Geometry is the parsed geometry document, if any.
	Geometry *GeometryDoc
	// Data is the encoded output once an encode step has run.
	Data []byte
	// Quality is the JPEG quality of Data (0 if not applicable).
	Quality int
	// BudgetMet is set by the encode steps.
	BudgetMet bool
	// Applied names the steps that ran, with their parameters.
	Applied []string

	codecs map[string]*Codec
}

// Step is one filter of a pipeline. It must not retain the Context.
type Step func(*Context) error

// Pipeline runs steps in order.
type Pipeline []Step

// Run runs every step, checking ctx before each one, and stops at the first
// error (ctx.Err() when cancelled).
func (p Pipeline) Run(ctx context.Context, pc *Context) error {
	for i, step := range p {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("adapters: before step %d of %d: %w", i+1, len(p), err)
		}
		if err := step(pc); err != nil {
			return err
		}
	}
	return nil
}
