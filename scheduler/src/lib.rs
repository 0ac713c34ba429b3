//! Fog's scheduler: NSGA-II placement of app replicas on harvested devices (not built yet).
