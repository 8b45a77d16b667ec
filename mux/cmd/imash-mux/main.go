// Command imash-mux runs an imash mux: the component in front of legacy
// servers that keeps their TCP connections open while sessions move between
// middleware servers. See `imash-mux -h`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/imashproject/imash/mux"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := mux.Run(ctx, os.Args[1:], os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "imash-mux:", err)
		}
		os.Exit(2)
	}
}
