//! Watch cache: per resource, current state plus a ring of recent events.
