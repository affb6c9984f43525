//! longproto-bridge: ChirpStack and Sigfox on one side, MQTT and HTTP on the other.
#![forbid(unsafe_code)]
