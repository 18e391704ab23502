//! Byte-level tests of the ring codec against a real core over temporary directories.
