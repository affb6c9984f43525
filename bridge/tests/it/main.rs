//! The bridge's integration tests, one binary: each module drives the real service
//! through real sockets (mosquitto, HTTP, SQLite files), or the real binary.
//! One binary links the crate once; a binary per file re-linked it twelve times.
mod common;

mod cellular;
mod chirpstack_ingest;
mod cli;
mod codec_js;
mod commands;
mod demo;
mod durability;
mod emulator;
mod fleet;
mod hardening;
mod layers;
mod observability;
mod openapi;
mod operators;
mod packaging;
mod shutdown;
mod sigfox;
mod sms;
mod standby;
mod tls;
