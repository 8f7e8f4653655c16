//! tether-proto: the wire types of `tether.health.v1` and their conversions
//! to and from `tether-core` types.
//!
//! Generated code stays inside this crate's `pb` module; everything else in
//! the workspace speaks core types. A conversion that fails names the field
//! at fault. This crate depends on core, prost/tonic and bytes, nothing
//! else.

pub mod convert;
pub mod frame;

/// Generated protobuf and tonic code for `tether.health.v1`.
#[allow(clippy::all, missing_debug_implementations)]
pub mod pb {
    tonic::include_proto!("tether.health.v1");
}

/// The encoded file descriptor set, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tether_descriptor");

pub use convert::ConvertError;
pub use frame::{FrameTooLarge, watch_frame};
