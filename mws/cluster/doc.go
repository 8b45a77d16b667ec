// Package cluster is MWS cluster membership on top of
// github.com/hashicorp/memberlist: which MWSs are alive, how loaded they
// are, and which MWS serves which device of which user.
//
// Each MWS calls Start with its name, gossip address, gRPC address and the
// cluster's gossip key, and Close when it shuts down. Membership comes from
// memberlist's SWIM failure detector: a member that leaves is reported
// StateLeft and one that stops answering StateDead, both as soon as this
// node learns it (Subscribe). Every member's metadata carries its gRPC
// address and Load, which SetLoad updates and LeastLoaded uses for
// admission.
//
// The device directory (SetDevice, LookupDevice, Devices) is replicated on
// every node: updates are gossiped at once and a full sync on every
// push-pull repairs what gossip lost, so a node that joins late catches up.
// Each MWS owns its own entries and every entry carries a hybrid logical
// clock, so all nodes converge on the same answer whatever the order in
// which updates arrive. An entry of an MWS that died, left or restarted
// reads offline on every node.
//
// Gossip is encrypted and authenticated with AES-GCM keys (Config.SecretKeys);
// a node with another key cannot join. Everything from peers is bounded
// and decoded defensively: a malformed message is logged and dropped.
package cluster
