// Command imash-proxy is imash's black-box mode: an HTTP forward proxy that
// fetches through an imash session, so that unmodified programs (curl, a
// browser) use imash via http_proxy. See `imash-proxy -h`.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/imashproject/imash/clientlib/httpproxy"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := httpproxy.Run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "imash-proxy:", err)
		if errors.Is(err, httpproxy.ErrUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
