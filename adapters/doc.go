// Package adapters adapts content objects to a device's constraints (paper
// §3.3.2) in three extensible steps:
//
//  1. Characterize: a [Registry] of [Characterizer]s, one per content type,
//     chosen by sniffing the bytes (never by a declared header), describes an
//     object as [Attributes] (format, width, height, colour depth, bytes …).
//     Image dimensions are read from the header and checked against
//     [Config.MaxPixels] before anything is decoded. Objects no characterizer
//     claims pass through unchanged.
//  2. Generate commands: [Adapter.Plan] compares the attributes with
//     [profiles.Constraints] in a fixed order (see [Adapter.Plan]) and
//     returns an inspectable [Plan].
//  3. Execute: the plan's steps run as a [Pipeline] (like UNIX filters) with
//     context cancellation checked between steps; a [Pool] bounds how many
//     adaptations run at once.
//
// [Adapter.Adapt] does all three and returns a [Result].
package adapters
