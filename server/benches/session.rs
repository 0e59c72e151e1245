//! The session layer's per-message and per-session costs: the budget check
//! every frame pays, and the JWT verification every session pays once.
//!
//! `cargo bench -p server --bench session`

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use server::config::{Config, Secret};
use server::session::auth::{Authenticator, TokenClaims, mint_hs256, now_secs};
use server::session::budget::Budget;

fn session(c: &mut Criterion) {
    let config = Config {
        jwt_secret: Some(Secret("bench-secret".into())),
        ..Config::default()
    };
    let auth = Authenticator::from_config(&config).expect("authenticator");
    let token = mint_hs256(b"bench-secret", &TokenClaims::new("alice", now_secs() + 3600));
    c.bench_function("jwt/verify HS256", |b| {
        b.iter(|| auth.verify(black_box(&token)).expect("valid"))
    });

    let limits = proto::SessionLimits {
        max_frame_bytes: 65_536,
        messages_per_sec: u32::MAX,
        message_burst: u32::MAX,
        bytes_per_sec: u32::MAX,
        byte_burst: u32::MAX,
        max_rooms: 16,
        max_room_members: 64,
        idle_timeout_ms: 60_000,
    };
    let mut budget = Budget::new(&limits, Instant::now());
    c.bench_function("budget/charge a 200-byte frame", |b| {
        b.iter(|| budget.charge(black_box(200), Instant::now()))
    });
}

criterion_group!(benches, session);
criterion_main!(benches);
