package clientlib_test

import (
	"context"
	"fmt"
	"io"
	"log"

	"github.com/imashproject/imash/clientlib"
	"github.com/imashproject/imash/testbed/cluster"
	"github.com/imashproject/imash/testbed/legacy"
)

// exampleCluster starts a legacy image server, an echo service and an
// in-process imash cluster for the examples. A real application dials an
// MWS that an operator runs, with certificate files issued by the cluster
// CA (see docs/operators.md).
func exampleCluster() (*cluster.Cluster, *legacy.ImageSet, func()) {
	set, err := legacy.GenerateImages(1, 3, 512, 64<<10)
	if err != nil {
		log.Fatal(err)
	}
	images, err := legacy.NewHTTPServer(set, legacy.HTTPOptions{})
	if err != nil {
		log.Fatal(err)
	}
	echo, err := legacy.NewEchoServer()
	if err != nil {
		log.Fatal(err)
	}
	c, err := cluster.Start(cluster.Options{
		Backends:     map[string]string{"images": images.Addr(), "echo": echo.Addr()},
		HTTPBackends: []string{"images"},
		Users:        map[string]string{"alice": "s3cret"},
	})
	if err != nil {
		log.Fatal(err)
	}
	return c, set, func() {
		c.Close(context.Background())
		images.Close()
		echo.Close()
	}
}

// A device dials its MWS, logs a user in, opens a session and fetches an
// object from a legacy HTTP server. The MWS keeps a copy: the second fetch
// is answered from its cache.
func Example() {
	c, set, stop := exampleCluster()
	defer stop()
	ctx := context.Background()

	cert, roots, err := c.DeviceCert("pda-1") // the device's certificate and the cluster CA
	if err != nil {
		log.Fatal(err)
	}
	client, err := clientlib.Dial(ctx, c.MWSAddrs[0], clientlib.Config{Certificate: cert, Roots: roots})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	if err := client.Login(ctx, "alice", "s3cret"); err != nil {
		log.Fatal(err)
	}
	sess, err := client.OpenSession(ctx, "minibrowser")
	if err != nil {
		log.Fatal(err)
	}
	defer sess.Close(ctx)

	img := set.Images()[0]
	for range 2 {
		obj, err := sess.Get(ctx, "images", "/images/"+img.Name)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(obj.Status, obj.ContentType, len(obj.Body) == len(img.Bytes), obj.Cache)
	}
	// Output:
	// 200 image/jpeg true CACHE_OUTCOME_MISS
	// 200 image/jpeg true CACHE_OUTCOME_HIT
}

// Session.Dial opens a byte stream to any TCP legacy server (here an echo
// service): a net.Conn whose legacy connection is held open by the mux.
func ExampleSession_Dial() {
	c, _, stop := exampleCluster()
	defer stop()
	ctx := context.Background()
	cert, roots, err := c.DeviceCert("laptop")
	if err != nil {
		log.Fatal(err)
	}
	client, err := clientlib.Dial(ctx, c.MWSAddrs[0], clientlib.Config{Certificate: cert, Roots: roots})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	if err := client.Login(ctx, "alice", "s3cret"); err != nil {
		log.Fatal(err)
	}
	sess, err := client.OpenSession(ctx, "shell")
	if err != nil {
		log.Fatal(err)
	}
	conn, err := sess.Dial(ctx, "echo")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "hello, legacy server\n"); err != nil {
		log.Fatal(err)
	}
	conn.CloseWrite() // the echo server sees EOF, finishes echoing and closes
	reply, err := io.ReadAll(conn)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(string(reply))
	// Output:
	// hello, legacy server
}
