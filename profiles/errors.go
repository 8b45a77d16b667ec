package profiles

import (
	"errors"
	"fmt"
)

// FieldError is one problem with one field of one profile document. Parse,
// Validate, Merge and FromClientHints report every problem they find at
// once, as an errors.Join of *FieldError values; use errors.As (or
// FieldErrors) to inspect them.
type FieldError struct {
	// File names the document: the name given to Parse, the file path
	// given to LoadFile, a profile's Name, or "client-hints".
	File string
	// Field is a slash-separated path starting with the profile kind,
	// e.g. "device/display/width", or an HTTP header name for client
	// hints, e.g. "Downlink".
	Field string
	// Problem says what is wrong, starting with the offending value when
	// there is one, e.g. `-3: must be positive`.
	Problem string
}

// Error formats the error as "file: field: problem".
func (e *FieldError) Error() string {
	return fmt.Sprintf("%s: %s: %s", e.File, e.Field, e.Problem)
}

// FieldErrors returns every *FieldError contained in err (which may be a
// joined or wrapped error), in order.
func FieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		if fe, ok := err.(*FieldError); ok {
			out = append(out, fe)
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}

// problems collects FieldErrors for one document.
type problems struct {
	file string
	errs []error
}

func (p *problems) add(field, format string, args ...any) {
	p.errs = append(p.errs, &FieldError{File: p.file, Field: field, Problem: fmt.Sprintf(format, args...)})
}

func (p *problems) err() error { return errors.Join(p.errs...) }
