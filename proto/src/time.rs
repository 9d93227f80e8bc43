//! Conversions between `chrono` times and `google.protobuf.Timestamp`, shared
//! by the server, the CLI and the SDK.

use chrono::{DateTime, Utc};
use pbjson_types::Timestamp;

/// A UTC time as a protobuf `Timestamp`.
pub fn to_proto(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf `Timestamp` as a UTC time; `None` when it is out of range.
pub fn from_proto(t: &Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_to_the_nanosecond_and_rejects_bad_nanos() {
        let t = DateTime::from_timestamp(1_790_000_000, 123_456_789).expect("time");
        assert_eq!(from_proto(&to_proto(t)), Some(t));
        assert_eq!(
            from_proto(&Timestamp {
                seconds: 0,
                nanos: -1
            }),
            None
        );
    }
}
