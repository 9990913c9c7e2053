//! The real MLServer (tests/servers/oip): filled in below.
