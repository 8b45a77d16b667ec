package cliflag

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteReadyFile writes addr and a newline to path, through a rename so
// that a reader polling for the file never sees it half written. Binaries
// write their bound listen address there (--ready-file) once they accept
// connections, for scripts and tests that listen on port 0.
func WriteReadyFile(path, addr string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("ready file: %w", err)
	}
	_, err = tmp.WriteString(addr + "\n")
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("ready file: %w", err)
	}
	return nil
}
