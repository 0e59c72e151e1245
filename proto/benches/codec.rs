//! The codec's cost per message, in both encodings: a ~4 KB offer (the
//! largest common signaling message) and a ~200-byte ICE candidate, encoded
//! and decoded bare (WebTransport) and enveloped (WSS).
//!
//! `cargo bench -p proto --bench codec`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use proto::codec::{decode, decode_enveloped, encode, encode_enveloped};
use proto::{ClientMessage, Encoding, PeerId, ServerMessage, Signal};

fn offer() -> ClientMessage {
    ClientMessage::Signal {
        id: Some(7),
        seq: Some(42),
        to: PeerId(0x0123_4567_89ab_cdef),
        signal: Signal::Offer {
            sdp: "a=candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host\r\n".repeat(70),
        },
    }
}

fn candidate() -> ServerMessage {
    ServerMessage::Signal {
        from: PeerId(0x0123_4567_89ab_cdef),
        signal: Signal::Candidate {
            candidate:
                "candidate:842163049 1 udp 1677729535 203.0.113.9 46154 typ srflx raddr 0.0.0.0 rport 0 generation 0"
                    .into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: Some("EsAw".into()),
        },
    }
}

fn codec(c: &mut Criterion) {
    for encoding in [Encoding::Json, Encoding::Bincode] {
        let name = encoding.as_str();
        let offer = offer();
        let bytes = encode(encoding, &offer);
        let enveloped = encode_enveloped(encoding, 3, &offer);
        c.bench_function(&format!("{name}/decode offer ({} B)", bytes.len()), |b| {
            b.iter(|| decode::<ClientMessage>(encoding, black_box(&bytes)).expect("decodes"))
        });
        c.bench_function(&format!("{name}/decode enveloped offer"), |b| {
            b.iter(|| decode_enveloped::<ClientMessage>(encoding, black_box(&enveloped)).expect("decodes"))
        });
        let candidate = candidate();
        c.bench_function(&format!("{name}/encode candidate"), |b| {
            b.iter(|| encode(encoding, black_box(&candidate)))
        });
        c.bench_function(&format!("{name}/encode enveloped candidate"), |b| {
            b.iter(|| encode_enveloped(encoding, 3, black_box(&candidate)))
        });
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
