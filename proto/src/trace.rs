//! W3C trace context (`traceparent`) in gRPC metadata: one query's work on the client and on
//! every node it reaches carries the same trace id, so the logs of all of them can be joined.

use tonic::metadata::{MetadataMap, MetadataValue};

/// The metadata key, as in the W3C Trace Context recommendation.
pub const TRACEPARENT: &str = "traceparent";

/// A trace id and the id of the span that made the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    pub span_id: u64,
}

impl TraceContext {
    /// A new trace (random ids, never zero: the recommendation forbids all-zero ids).
    pub fn new() -> TraceContext {
        TraceContext {
            trace_id: rand::random::<u128>().max(1),
            span_id: rand::random::<u64>().max(1),
        }
    }

    /// A span of the same trace.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id,
            span_id: rand::random::<u64>().max(1),
        }
    }

    /// Parses `00-<32 hex>-<16 hex>-<2 hex>`; `None` for anything else.
    pub fn parse(header: &str) -> Option<TraceContext> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        fn hex(s: &str, len: usize) -> Option<&str> {
            (s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then_some(s)
        }
        hex(version, 2).filter(|v| *v != "ff")?;
        hex(flags, 2)?;
        // Version 00 has exactly four fields; later versions may add more.
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id = u128::from_str_radix(hex(trace, 32)?, 16).ok()?;
        let span_id = u64::from_str_radix(hex(span, 16)?, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(TraceContext { trace_id, span_id })
    }

    /// The `traceparent` value (sampled).
    pub fn header(&self) -> String {
        format!("00-{:032x}-{:016x}-01", self.trace_id, self.span_id)
    }

    /// The trace id as 32 lowercase hex digits (what logs show).
    pub fn trace_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The context a call carries, if it carries a valid one.
    pub fn from_metadata(metadata: &MetadataMap) -> Option<TraceContext> {
        TraceContext::parse(metadata.get(TRACEPARENT)?.to_str().ok()?)
    }

    /// Sets this context on an outgoing call.
    pub fn insert(&self, metadata: &mut MetadataMap) {
        if let Ok(v) = MetadataValue::try_from(self.header()) {
            metadata.insert(TRACEPARENT, v);
        }
    }
}

impl Default for TraceContext {
    fn default() -> TraceContext {
        TraceContext::new()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn header_round_trips() {
        let c = TraceContext::new();
        assert_eq!(TraceContext::parse(&c.header()), Some(c));
        let child = c.child();
        assert_eq!(child.trace_id, c.trace_id);
        assert_ne!(child.span_id, c.span_id);
    }

    #[test]
    fn parses_the_recommendation_example_and_refuses_bad_values() {
        let c =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(c.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.span_id, 0x00f0_67aa_0ba9_02b7);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }
}
