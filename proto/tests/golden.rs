//! The examples and tables of `PROTOCOL.md` checked against the code.
//!
//! Every fenced block whose info string names an example is decoded with the
//! real codec and re-encoded: bincode must come back byte for byte, JSON as the
//! same JSON value. Every message type and every signal kind must appear in all
//! four forms (bare and enveloped JSON, bare and enveloped bincode), and the
//! variant-number and error-code tables must match the code. If the document
//! and the code drift apart, this test fails.
//!
//! Naming scheme: an example named `c-...` is a `ClientMessage`, one named
//! `s-...` a `ServerMessage`. The info strings are:
//!
//! | info string | form |
//! |---|---|
//! | `json example=<name>` | JSON on a WebTransport stream (no envelope) |
//! | `json wss=<name>` | JSON WSS text frame (with `ch`) |
//! | `hex bincode=<name>` | bincode on a WebTransport stream (no envelope) |
//! | `hex wss-bincode=<name>` | bincode WSS binary frame (channel varint first) |
//! | `hex frame-json=<name>` | a whole WebTransport frame of a JSON example |
//! | `hex frame-bincode=<name>` | a whole WebTransport frame of a bincode example |

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bincode::{Decode, Encode};
use proto::codec::{self, Encoding};
use proto::frame::{encode_frame, read_frame};
use proto::{ChannelId, ClientMessage, ErrorCode, ServerMessage, Signal};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

const DOC: &str = include_str!("../PROTOCOL.md");

/// Every `type` of a client message. `client_kind` below matches on every
/// variant without a wildcard, so a new variant does not compile until it is
/// added here (and then this test demands examples of it).
const CLIENT_KINDS: &[&str] = &[
    "hello",
    "join",
    "leave",
    "signal",
    "broadcast",
    "ping",
    "refresh",
    "received",
    "ice_servers",
];

const SERVER_KINDS: &[&str] = &[
    "welcome",
    "joined",
    "rejoined",
    "left",
    "peer_joined",
    "peer_left",
    "signal",
    "broadcast",
    "ack",
    "pong",
    "error",
    "token_expiring",
    "goodbye",
    "ice_servers",
];

const SIGNAL_KINDS: &[&str] = &["offer", "answer", "candidate", "custom"];

fn client_kind(m: &ClientMessage) -> &'static str {
    match m {
        ClientMessage::Hello { .. } => "hello",
        ClientMessage::Join { .. } => "join",
        ClientMessage::Leave { .. } => "leave",
        ClientMessage::Signal { .. } => "signal",
        ClientMessage::Broadcast { .. } => "broadcast",
        ClientMessage::Ping { .. } => "ping",
        ClientMessage::Refresh { .. } => "refresh",
        ClientMessage::Received { .. } => "received",
        ClientMessage::IceServers { .. } => "ice_servers",
    }
}

fn server_kind(m: &ServerMessage) -> &'static str {
    match m {
        ServerMessage::Welcome { .. } => "welcome",
        ServerMessage::Joined { .. } => "joined",
        ServerMessage::Left { .. } => "left",
        ServerMessage::PeerJoined { .. } => "peer_joined",
        ServerMessage::PeerLeft { .. } => "peer_left",
        ServerMessage::Signal { .. } => "signal",
        ServerMessage::Broadcast { .. } => "broadcast",
        ServerMessage::Ack { .. } => "ack",
        ServerMessage::Pong { .. } => "pong",
        ServerMessage::Error { .. } => "error",
        ServerMessage::TokenExpiring { .. } => "token_expiring",
        ServerMessage::Rejoined { .. } => "rejoined",
        ServerMessage::Goodbye { .. } => "goodbye",
        ServerMessage::IceServers { .. } => "ice_servers",
    }
}

fn signal_kind(s: &Signal) -> &'static str {
    match s {
        Signal::Offer { .. } => "offer",
        Signal::Answer { .. } => "answer",
        Signal::Candidate { .. } => "candidate",
        Signal::Custom { .. } => "custom",
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Msg {
    Client(ClientMessage),
    Server(ServerMessage),
}

impl Msg {
    /// `(is_client, type, signal kind if a signal)`.
    fn describe(&self) -> (bool, &'static str, Option<&'static str>) {
        match self {
            Msg::Client(m) => {
                assert_eq!(client_kind(m), m.kind(), "kind() of {m:?}");
                let signal = match m {
                    ClientMessage::Signal { signal, .. } => Some(signal_kind(signal)),
                    _ => None,
                };
                (true, m.kind(), signal)
            }
            Msg::Server(m) => {
                assert_eq!(server_kind(m), m.kind(), "kind() of {m:?}");
                let signal = match m {
                    ServerMessage::Signal { signal, .. } => Some(signal_kind(signal)),
                    _ => None,
                };
                (false, m.kind(), signal)
            }
        }
    }

    fn signal(&self) -> Option<&Signal> {
        match self {
            Msg::Client(ClientMessage::Signal { signal, .. }) | Msg::Server(ServerMessage::Signal { signal, .. }) => {
                Some(signal)
            }
            _ => None,
        }
    }

    fn bincode(&self) -> Vec<u8> {
        match self {
            Msg::Client(m) => codec::encode(Encoding::Bincode, m),
            Msg::Server(m) => codec::encode(Encoding::Bincode, m),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Form {
    Json,
    WssJson,
    Bincode,
    WssBincode,
}

const FORMS: [Form; 4] = [Form::Json, Form::WssJson, Form::Bincode, Form::WssBincode];

/// One fenced block: its info string and its text.
struct Block {
    line: usize,
    lang: String,
    attrs: Vec<(String, String)>,
    body: String,
}

fn blocks(doc: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = doc.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let mut words = info.split_whitespace();
        let lang = words.next().unwrap_or("").to_owned();
        let attrs = words
            .map(|w| match w.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => panic!("line {}: info string word {w:?} is not key=value", n + 1),
            })
            .collect();
        let mut body = String::new();
        loop {
            let (_, line) = lines
                .next()
                .unwrap_or_else(|| panic!("line {}: unclosed code block", n + 1));
            if line.starts_with("```") {
                break;
            }
            body.push_str(line);
            body.push('\n');
        }
        out.push(Block {
            line: n + 1,
            lang,
            attrs,
            body,
        });
    }
    out
}

fn unhex(text: &str) -> Vec<u8> {
    let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(
        digits.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "hex must be lowercase hex digits: {text:?}"
    );
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits: {text:?}");
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
        .collect()
}

fn json_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("valid JSON")
}

trait Message: Serialize + DeserializeOwned + Encode + Decode<()> + PartialEq + Debug {}
impl<M: Serialize + DeserializeOwned + Encode + Decode<()> + PartialEq + Debug> Message for M {}

/// Decodes one example in `form`, re-encodes it and checks it comes back the same.
fn check<M: Message>(form: Form, body: &str, at: &str) -> (Option<ChannelId>, M) {
    match form {
        Form::Json => {
            let text = body.trim_end();
            let m: M = codec::decode(Encoding::Json, text.as_bytes()).unwrap_or_else(|e| panic!("{at}: {e}"));
            let again = codec::encode(Encoding::Json, &m);
            assert_eq!(
                json_value(&again),
                json_value(text.as_bytes()),
                "{at}: JSON does not re-encode to the same value"
            );
            (None, m)
        }
        Form::WssJson => {
            let text = body.trim_end();
            let (ch, m): (ChannelId, M) =
                codec::decode_enveloped(Encoding::Json, text.as_bytes()).unwrap_or_else(|e| panic!("{at}: {e}"));
            let again = codec::encode_enveloped(Encoding::Json, ch, &m);
            assert_eq!(
                json_value(&again),
                json_value(text.as_bytes()),
                "{at}: enveloped JSON does not re-encode to the same value"
            );
            (Some(ch), m)
        }
        Form::Bincode => {
            let bytes = unhex(body);
            let m: M = codec::decode(Encoding::Bincode, &bytes).unwrap_or_else(|e| panic!("{at}: {e}"));
            assert_eq!(
                codec::encode(Encoding::Bincode, &m),
                bytes,
                "{at}: bincode does not re-encode to the same bytes"
            );
            (None, m)
        }
        Form::WssBincode => {
            let bytes = unhex(body);
            let (ch, m): (ChannelId, M) =
                codec::decode_enveloped(Encoding::Bincode, &bytes).unwrap_or_else(|e| panic!("{at}: {e}"));
            assert_eq!(
                codec::encode_enveloped(Encoding::Bincode, ch, &m),
                bytes,
                "{at}: enveloped bincode does not re-encode to the same bytes"
            );
            (Some(ch), m)
        }
    }
}

fn check_msg(form: Form, name: &str, body: &str, at: &str) -> (Option<ChannelId>, Msg) {
    if name.starts_with("c-") {
        let (ch, m) = check::<ClientMessage>(form, body, at);
        (ch, Msg::Client(m))
    } else if name.starts_with("s-") {
        let (ch, m) = check::<ServerMessage>(form, body, at);
        (ch, Msg::Server(m))
    } else {
        panic!("{at}: example name {name:?} starts with neither c- nor s-");
    }
}

/// Reads the single frame in `bytes` with the real frame reader.
fn read_one_frame(bytes: &[u8]) -> Vec<u8> {
    let reading = pin!(async {
        let mut reader = bytes;
        let mut buf = Vec::new();
        assert!(
            read_frame(&mut reader, &mut buf, codec::HARD_MAX_FRAME)
                .await
                .expect("a whole frame")
        );
        assert!(
            !read_frame(&mut reader, &mut Vec::new(), codec::HARD_MAX_FRAME)
                .await
                .expect("nothing after the frame"),
            "bytes left after the frame"
        );
        buf
    });
    match reading.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(buf) => buf,
        Poll::Pending => panic!("reading from a byte slice never waits"),
    }
}

/// Checks a whole-frame example and returns the message in it.
fn check_frame<M: Message>(encoding: Encoding, bytes: &[u8], at: &str) -> M {
    let payload = read_one_frame(bytes);
    let m: M = codec::decode(encoding, &payload).unwrap_or_else(|e| panic!("{at}: {e}"));
    let again = encode_frame(encoding, &m);
    match encoding {
        Encoding::Bincode => assert_eq!(again, bytes, "{at}: frame does not re-encode"),
        Encoding::Json => {
            assert_eq!(
                json_value(&again[proto::frame::PREFIX_LEN..]),
                json_value(&payload),
                "{at}: frame does not re-encode to the same value"
            );
        }
    }
    m
}

/// The rows of the table between `<!-- table:NAME -->` and `<!-- /table -->`:
/// the cells of every row whose first cell is a number, backticks removed.
fn table(name: &str) -> Vec<Vec<String>> {
    let start = format!("<!-- table:{name} -->");
    let from = DOC.find(&start).unwrap_or_else(|| panic!("PROTOCOL.md has no {start}")) + start.len();
    let len = DOC[from..]
        .find("<!-- /table -->")
        .unwrap_or_else(|| panic!("table {name} is not closed"));
    DOC[from..from + len]
        .lines()
        .filter(|l| l.trim_start().starts_with('|'))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().replace('`', ""))
                .collect::<Vec<_>>()
        })
        .filter(|cells| cells[0].parse::<u64>().is_ok())
        .collect()
}

/// `kind -> number` from a variant table, checking it lists exactly `kinds`.
fn variant_table(name: &str, kinds: &[&str]) -> BTreeMap<String, u64> {
    let rows = table(name);
    let map: BTreeMap<String, u64> = rows.iter().map(|r| (r[1].clone(), r[0].parse().unwrap())).collect();
    assert_eq!(map.len(), rows.len(), "table {name} lists a kind twice");
    let listed: BTreeSet<&str> = map.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = kinds.iter().copied().collect();
    assert_eq!(listed, expected, "table {name} does not list every kind");
    map
}

/// The first bincode varint of `bytes` (a variant number or a channel id).
fn first_varint(bytes: &[u8]) -> u64 {
    let le = |n: usize| bytes[1..=n].iter().rev().fold(0u64, |acc, b| acc << 8 | u64::from(*b));
    match bytes[0] {
        b @ 0..=250 => u64::from(b),
        251 => le(2),
        252 => le(4),
        253 => le(8),
        b => panic!("unexpected varint marker {b:#x}"),
    }
}

#[derive(Default)]
struct Example {
    forms: BTreeMap<Form, (Option<ChannelId>, Msg)>,
}

fn examples() -> (BTreeMap<String, Example>, Vec<(String, Msg)>) {
    let mut examples: BTreeMap<String, Example> = BTreeMap::new();
    let mut frames = Vec::new();
    for block in blocks(DOC) {
        let at = format!("PROTOCOL.md line {}", block.line);
        if block.attrs.is_empty() {
            continue;
        }
        assert_eq!(block.attrs.len(), 1, "{at}: more than one attribute");
        let (key, name) = &block.attrs[0];
        let form = match (block.lang.as_str(), key.as_str()) {
            ("json", "example") => Some(Form::Json),
            ("json", "wss") => Some(Form::WssJson),
            ("hex", "bincode") => Some(Form::Bincode),
            ("hex", "wss-bincode") => Some(Form::WssBincode),
            ("hex", "frame-json" | "frame-bincode") => None,
            (lang, key) => panic!("{at}: unknown example block `{lang} {key}=`"),
        };
        match form {
            Some(form) => {
                let decoded = check_msg(form, name, &block.body, &at);
                let previous = examples.entry(name.clone()).or_default().forms.insert(form, decoded);
                assert!(previous.is_none(), "{at}: a second {form:?} of {name}");
            }
            None => {
                let encoding = if key == "frame-json" {
                    Encoding::Json
                } else {
                    Encoding::Bincode
                };
                let bytes = unhex(&block.body);
                let m = if name.starts_with("c-") {
                    Msg::Client(check_frame(encoding, &bytes, &at))
                } else if name.starts_with("s-") {
                    Msg::Server(check_frame(encoding, &bytes, &at))
                } else {
                    panic!("{at}: example name {name:?} starts with neither c- nor s-");
                };
                frames.push((name.clone(), m));
            }
        }
    }
    (examples, frames)
}

#[test]
fn every_example_decodes_and_re_encodes_identically() {
    let (examples, frames) = examples();
    assert!(examples.len() > 20, "too few examples found");
    for (name, example) in &examples {
        for form in FORMS {
            assert!(example.forms.contains_key(&form), "example {name} has no {form:?} form");
        }
        let (_, first) = &example.forms[&Form::Json];
        for (form, (_, m)) in &example.forms {
            assert_eq!(m, first, "{name}: the {form:?} form is another message");
        }
        let json_ch = example.forms[&Form::WssJson].0;
        let bincode_ch = example.forms[&Form::WssBincode].0;
        assert_eq!(json_ch, bincode_ch, "{name}: the two WSS forms use different channels");
    }
    assert!(frames.iter().any(|(n, _)| examples.contains_key(n)), "no frame example");
    for (name, m) in &frames {
        let example = examples
            .get(name)
            .unwrap_or_else(|| panic!("frame of unknown example {name}"));
        assert_eq!(&example.forms[&Form::Json].1, m, "frame of {name} is another message");
    }
}

#[test]
fn every_message_and_signal_kind_has_an_example_in_every_form() {
    let (examples, _) = examples();
    for form in FORMS {
        let mut client = BTreeSet::new();
        let mut server = BTreeSet::new();
        let mut client_signals = BTreeSet::new();
        let mut server_signals = BTreeSet::new();
        for example in examples.values() {
            let Some((_, m)) = example.forms.get(&form) else {
                continue;
            };
            let (is_client, kind, signal) = m.describe();
            if is_client {
                client.insert(kind);
                client_signals.extend(signal);
            } else {
                server.insert(kind);
                server_signals.extend(signal);
            }
        }
        let all = |kinds: &[&'static str]| kinds.iter().copied().collect::<BTreeSet<_>>();
        assert_eq!(client, all(CLIENT_KINDS), "client messages in {form:?}");
        assert_eq!(server, all(SERVER_KINDS), "server messages in {form:?}");
        assert_eq!(client_signals, all(SIGNAL_KINDS), "client signals in {form:?}");
        assert_eq!(server_signals, all(SIGNAL_KINDS), "server signals in {form:?}");
    }
}

#[test]
fn example_names_follow_the_scheme() {
    let (examples, _) = examples();
    for (name, example) in &examples {
        let (is_client, _, _) = example.forms[&Form::Json].1.describe();
        assert_eq!(
            name.starts_with("c-"),
            is_client,
            "{name}: c- is for client messages, s- for server messages"
        );
        assert!(
            name.len() > 2
                && name[2..]
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}: use lowercase words joined by -"
        );
    }
}

#[test]
fn json_examples_carry_the_documented_type_and_kind_names() {
    let (examples, _) = examples();
    for (name, example) in &examples {
        let m = &example.forms[&Form::Json].1;
        let json = match m {
            Msg::Client(m) => serde_json::to_value(m).unwrap(),
            Msg::Server(m) => serde_json::to_value(m).unwrap(),
        };
        let (_, kind, signal) = m.describe();
        assert_eq!(json["type"], kind, "{name}");
        if let Some(signal) = signal {
            assert_eq!(json["signal"]["kind"], signal, "{name}");
        }
    }
}

#[test]
fn the_variant_tables_match_the_bincode_numbers() {
    let client = variant_table("client-variants", CLIENT_KINDS);
    let server = variant_table("server-variants", SERVER_KINDS);
    let signals = variant_table("signal-variants", SIGNAL_KINDS);
    let (examples, _) = examples();
    for (name, example) in &examples {
        let m = &example.forms[&Form::Bincode].1;
        let (is_client, kind, _) = m.describe();
        let table = if is_client { &client } else { &server };
        assert_eq!(
            first_varint(&m.bincode()),
            table[kind],
            "{name}: variant number of message {kind}"
        );
        if let Some(signal) = m.signal() {
            let bytes = codec::encode(Encoding::Bincode, signal);
            assert_eq!(
                first_varint(&bytes),
                signals[signal_kind(signal)],
                "{name}: variant number of signal {}",
                signal_kind(signal)
            );
        }
    }
}

#[test]
fn the_error_code_table_matches_the_code() {
    let rows = table("error-codes");
    let documented: Vec<(u16, String, u16)> = rows
        .iter()
        .map(|r| {
            (
                r[0].parse().unwrap(),
                r[1].clone(),
                r[2].parse().unwrap_or_else(|_| panic!("HTTP status {:?}", r[2])),
            )
        })
        .collect();
    let actual: Vec<(u16, String, u16)> = ErrorCode::ALL
        .iter()
        .map(|c| (c.number(), c.as_str().to_owned(), c.http_status()))
        .collect();
    assert_eq!(documented, actual);
}

#[test]
fn the_documented_versions_and_sizes_match_the_code() {
    let min = format!("`MIN_PROTOCOL_VERSION` = {}", proto::version::MIN_PROTOCOL_VERSION);
    let max = format!("`PROTOCOL_VERSION` = {}", proto::version::PROTOCOL_VERSION);
    assert!(DOC.contains(&min), "PROTOCOL.md should say {min}");
    assert!(DOC.contains(&max), "PROTOCOL.md should say {max}");
    assert_eq!(codec::HARD_MAX_FRAME, 1_048_576, "PROTOCOL.md says 1 MiB");
    assert_eq!(proto::frame::PREFIX_LEN, 4, "PROTOCOL.md says 4 bytes");
    assert_eq!(proto::RoomId::MAX_LEN, 64, "PROTOCOL.md says 64 bytes");
}
