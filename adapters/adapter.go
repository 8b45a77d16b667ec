package adapters

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/imashproject/imash/profiles"
)

// Result is the outcome of one adaptation.
type Result struct {
	// Data is the object to deliver: the adapted bytes, or the input
	// itself (not a copy) when nothing was adapted.
	Data []byte
	// ContentType is Data's media type (sniffed for unknown content).
	ContentType string
	// Adapted reports whether Data differs from the input.
	Adapted bool
	// Steps lists the executed steps with their parameters, e.g.
	// "resize(240x180)", "reencode(image/jpeg,budget=20000),q=62".
	Steps []string
	// Plan is the generated command list.
	Plan Plan
	// Before and After characterize input and output (zero Format for
	// unknown content). After is read from Data's header, so it shows the
	// container's colour model, not a reduced depth.
	Before, After Attributes
	// BudgetMet reports len(Data) <= ByteBudget (true without a budget).
	// False is a best effort, not an error.
	BudgetMet bool
	// Quality is the JPEG quality of Data, 0 when not re-encoded or not
	// applicable.
	Quality int
}

// Adapter characterizes, plans and executes adaptations. It is safe for
// concurrent use; Adapt runs on the caller's goroutine (see Pool to bound
// concurrency).
type Adapter struct {
	cfg    Config
	reg    *Registry
	codecs map[string]*Codec
	log    *slog.Logger
}

// New returns an Adapter. A nil registry means NewDefaultRegistry(); nil
// codecs means DefaultCodecs().
func New(cfg Config, reg *Registry, codecs []Codec) (*Adapter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if reg == nil {
		reg = NewDefaultRegistry()
	}
	if codecs == nil {
		codecs = DefaultCodecs()
	}
	a := &Adapter{cfg: cfg, reg: reg, codecs: make(map[string]*Codec, len(codecs)), log: cfg.Logger}
	for i := range codecs {
		k := &codecs[i]
		if _, dup := a.codecs[k.MediaType]; dup {
			return nil, fmt.Errorf("%w: codec for %s", ErrDuplicate, k.MediaType)
		}
		a.codecs[k.MediaType] = k
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	return a, nil
}

// Registry returns the adapter's characterizer registry.
func (a *Adapter) Registry() *Registry { return a.reg }

// Characterize describes data. ok is false for content no characterizer
// claims.
func (a *Adapter) Characterize(data []byte) (attrs Attributes, caps Capabilities, ok bool, err error) {
	c, ok := a.reg.Lookup(data)
	if !ok {
		return Attributes{}, Capabilities{}, false, nil
	}
	caps = c.Capabilities()
	if caps.Geometry {
		// The adapter's window limit applies, whatever the registered value.
		c = GeometryCharacterizer{MaxWindows: a.cfg.MaxWindows}
	}
	attrs, err = c.Characterize(data, a.cfg.MaxPixels)
	return attrs, caps, true, err
}

// Adapt characterizes data, plans against c and runs the plan. Unknown
// content and empty plans return the input unchanged. Errors: *DecodeError
// (corrupt or truncated), *PixelLimitError (refused before decoding),
// *UnsupportedError, or ctx.Err() wrapped when cancelled between steps.
// A missed byte budget is reported by Result.BudgetMet, not as an error.
func (a *Adapter) Adapt(ctx context.Context, data []byte, c profiles.Constraints) (*Result, error) {
	start := time.Now()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	attrs, caps, ok, err := a.Characterize(data)
	if err != nil {
		return nil, err
	}
	passthrough := func() *Result {
		ct := attrs.Format
		if !ok {
			ct = http.DetectContentType(data)
		}
		return &Result{
			Data: data, ContentType: ct, Before: attrs, After: attrs,
			BudgetMet: c.ByteBudget <= 0 || int64(len(data)) <= c.ByteBudget,
		}
	}
	if !ok {
		return passthrough(), nil
	}
	plan, err := a.Plan(attrs, caps, c)
	if err != nil {
		return nil, err
	}
	if len(plan) == 0 {
		return passthrough(), nil
	}
	pipe := make(Pipeline, len(plan))
	for i, cmd := range plan {
		if pipe[i], err = stepFor(cmd); err != nil {
			return nil, err
		}
	}
	pc := &Context{Config: a.cfg, Constraints: c, Src: data, Attrs: attrs, codecs: a.codecs}
	if err := pipe.Run(ctx, pc); err != nil {
		return nil, err
	}
	res := &Result{
		Data: pc.Data, ContentType: attrs.Format, Adapted: true, Steps: pc.Applied, Plan: plan,
		Before: attrs, BudgetMet: pc.BudgetMet, Quality: pc.Quality,
	}
	if pc.Codec != nil {
		res.ContentType = pc.Codec.MediaType
	}
	if after, _, ok, err := a.Characterize(pc.Data); ok && err == nil {
		res.After = after
	} else {
		res.After = Attributes{Format: res.ContentType, Bytes: int64(len(pc.Data))}
	}
	a.log.Debug("adapted", "format", attrs.Format, "content_type", res.ContentType,
		"bytes_in", len(data), "bytes_out", len(pc.Data), "steps", pc.Applied,
		"budget_met", pc.BudgetMet, "elapsed", time.Since(start))
	return res, nil
}
