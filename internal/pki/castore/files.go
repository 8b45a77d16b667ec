package castore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// exists reports whether path exists; errors other than "does not exist"
// (permissions, I/O) are returned so that they are not mistaken for absence.
func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("castore: %w", err)
	}
}
