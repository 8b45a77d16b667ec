// Package objcache is the MWS's HTTP object cache: it fetches objects from
// unmodified legacy HTTP servers on behalf of client devices, keeps a copy of
// every storable server object addressed by its content digest, and answers
// later requests from that copy when RFC 9111 (RFC 7234) caching rules allow.
//
// Two stores sit side by side:
//
//   - the object store (ristretto, cost = bytes) maps a digest
//     ("sha256:<hex>") to an immutable *Object. A savepoint refers to server
//     objects by digest and gets them back with Cache.Lookup.
//   - the index (a bounded LRU) maps a request key — backend, method, path and
//     query, the request header values named by the response's Vary, and the
//     user for private responses — to a digest plus the freshness metadata
//     needed to reuse or revalidate it.
//
// An index entry whose object has been evicted is a miss. Cache-Control
// semantics come from github.com/pquerna/cachecontrol, evaluated against the
// Config's clock so that tests can move time.
package objcache
