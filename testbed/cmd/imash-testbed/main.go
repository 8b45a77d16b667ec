// Command imash-testbed builds the iMASH testbed on one machine and runs
// workloads through it; "imash-testbed demo" is the quick tour. See
// "imash-testbed help".
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/imashproject/imash/testbed"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := testbed.Run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "imash-testbed:", err)
		stop()
		if errors.Is(err, testbed.ErrUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
