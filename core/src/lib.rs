//! respawn-core (in progress).
#![no_std]
extern crate alloc;
