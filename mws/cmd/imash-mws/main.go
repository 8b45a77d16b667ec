// Command imash-mws runs an imash middleware server ("serve"), manages the
// cluster CA ("ca") and the user file ("user"), and operates a running
// cluster with an operator certificate ("op"). See `imash-mws help`.
//
// SIGINT or SIGTERM stops "serve" gracefully (in a cluster, after moving
// its sessions to peers); a second one ends the process at once.
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
	go func() {
		// Once the first signal has started the graceful stop, the default
		// action of a second one ends the process.
		<-ctx.Done()
		stop()
	}()
	if err := mws.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "imash-mws:", err)
		if errors.Is(err, mws.ErrUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
