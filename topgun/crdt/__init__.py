"""Sans-I/O CRDT core shared by the server and the client: HLC, LWW map, OR map, Merkle trees."""
