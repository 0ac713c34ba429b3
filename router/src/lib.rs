//! Fog's router: the visitor edge (HTTP gateway, onion services, Betanet) (not built yet).
