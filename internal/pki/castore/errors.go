package castore

import "errors"

// ErrExists reports that Init found a CA already in the directory, or that
// Issue found a certificate already issued for the same role and name.
// Nothing is overwritten when it is returned.
var ErrExists = errors.New("already exists")

// ErrNoStore reports that Open found no CA store in the directory (ca.pem,
// ca-key.pem or index.json is missing). Run "ca init" first.
var ErrNoStore = errors.New("no CA store")

// ErrUsage marks errors of the command line itself (unknown subcommand,
// bad or missing flag). A main function maps it to exit status 2.
var ErrUsage = errors.New("usage")
