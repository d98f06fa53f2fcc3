//! Keeping a Kafka client on protocol versions whose responses advertise brokers only
//! where the proxy rewrites them.
//!
//! From Produce v10 and Fetch v12 on (KIP-951, "leader discovery"), a response to a
//! request that reached the wrong broker may carry the new leader and, in tagged fields,
//! the `host:port` of brokers: a client following them would connect to the broker
//! directly, past the proxy and its faults. librdkafka 2.12 applies them through a
//! metadata update that also crashes it now and then (SIGSEGV in
//! `rd_kafka_metadata_update_op`, as in confluentinc/librdkafka#5280) when the proxy
//! cuts connections. So the proxy lowers the newest versions an ApiVersions response
//! offers for Produce to 9 and for Fetch to 11 (both still current protocol, without
//! those fields); the client then learns leaders from Metadata responses, which the
//! proxy rewrites. Every other byte is kept: an int16 is replaced by an int16.

use super::{Call, Malformed, RESPONSE_HEAD, Wire};

/// API key of Produce.
const PRODUCE: i16 = 0;
/// API key of Fetch.
const FETCH: i16 = 1;
/// The newest version the proxy lets a client use, per API key.
const NEWEST: [(i16, i16); 2] = [(PRODUCE, 9), (FETCH, 11)];

/// `response` (an ApiVersions response payload, without its size prefix) as a whole
/// frame, with the newest versions of the APIs in [`NEWEST`] lowered to their caps.
///
/// ```text
/// correlation_id int32 | error_code int16 | api_keys [ api_key int16 | min int16 |
///   max int16 | tagged fields (v3+) ] | ...
/// ```
///
/// # Errors
/// When the payload is cut short or a length is impossible.
pub(crate) fn capped(call: Call, response: &[u8]) -> Result<Vec<u8>, Malformed> {
    let size = i32::try_from(response.len()).map_err(|_| Malformed {
        api_key: call.api_key,
        api_version: call.api_version,
        why: "a frame larger than a frame can be",
    })?;
    let mut frame = Vec::with_capacity(4 + response.len());
    frame.extend_from_slice(&size.to_be_bytes());
    frame.extend_from_slice(response);
    let mut wire = Wire {
        bytes: response,
        at: 0,
        call,
    };
    // The ApiVersions response header is v0 in every version: the correlation id only.
    wire.take(RESPONSE_HEAD)?;
    if wire.i16()? != 0 {
        // An error (e.g. a version the broker does not speak) lists no limits to lower.
        return Ok(frame);
    }
    for _ in 0..wire.array_len()? {
        let api_key = wire.i16()?;
        wire.i16()?;
        let max_at = wire.at;
        let max = wire.i16()?;
        if let Some(&(_, cap)) = NEWEST.iter().find(|(key, _)| *key == api_key)
            && max > cap
        {
            frame[4 + max_at..4 + max_at + 2].copy_from_slice(&cap.to_be_bytes());
        }
        if call.flexible() {
            wire.skip_tagged_fields()?;
        }
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::super::API_VERSIONS;
    use super::*;

    /// An ApiVersions response of `version` listing `(key, min, max)`.
    fn response(version: i16, apis: &[(i16, i16, i16)]) -> Vec<u8> {
        let mut out = 7i32.to_be_bytes().to_vec();
        out.extend_from_slice(&0i16.to_be_bytes());
        if version >= 3 {
            out.push(u8::try_from(apis.len() + 1).unwrap());
        } else {
            out.extend_from_slice(&i32::try_from(apis.len()).unwrap().to_be_bytes());
        }
        for (key, min, max) in apis {
            for v in [key, min, max] {
                out.extend_from_slice(&v.to_be_bytes());
            }
            if version >= 3 {
                out.push(0);
            }
        }
        out.extend_from_slice(&0i32.to_be_bytes()); // throttle
        if version >= 3 {
            out.push(0);
        }
        out
    }

    #[test]
    fn produce_and_fetch_are_capped_and_the_rest_kept() {
        for version in [0, 2, 3] {
            let call = Call {
                api_key: API_VERSIONS,
                api_version: version,
            };
            let apis = [(0, 0, 11), (1, 4, 17), (3, 0, 12), (18, 0, 4)];
            let original = response(version, &apis);
            let frame = capped(call, &original).unwrap();
            assert_eq!(&frame[..4], &(original.len() as i32).to_be_bytes());
            let expected = response(version, &[(0, 0, 9), (1, 4, 11), (3, 0, 12), (18, 0, 4)]);
            assert_eq!(&frame[4..], &expected[..], "v{version}");
            // Already old enough: unchanged.
            let old = response(version, &[(0, 0, 7), (1, 4, 11)]);
            assert_eq!(&capped(call, &old).unwrap()[4..], &old[..]);
            // Cut short: refused, so the proxy forwards it as it came.
            assert!(capped(call, &original[..original.len() - 9]).is_err());
        }
    }
}
