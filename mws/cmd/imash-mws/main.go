// Command imash-mws runs an imash middleware server ("serve") and manages
// the cluster CA ("ca") and the user file ("user"). See `imash-mws help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/imashproject/imash/mws"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := mws.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "imash-mws:", err)
		if errors.Is(err, mws.ErrUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
