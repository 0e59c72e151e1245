//! Bad frames are told apart: not a message, an unknown type, or wrong fields.

use proto::codec::{decode, decode_enveloped};
use proto::{ClientMessage, Encoding, ErrorCode};

fn json_code(text: &str) -> ErrorCode {
    decode::<ClientMessage>(Encoding::Json, text.as_bytes())
        .unwrap_err()
        .code()
}

fn enveloped_code(text: &str) -> ErrorCode {
    decode_enveloped::<ClientMessage>(Encoding::Json, text.as_bytes())
        .unwrap_err()
        .code()
}

#[test]
fn text_that_is_not_a_message_is_a_bad_frame() {
    assert_eq!(json_code("{\"type\":\"ping\""), ErrorCode::BadFrame);
    assert_eq!(json_code("not json"), ErrorCode::BadFrame);
    // serde_json stops at 128 levels of nesting, before the stack is in danger.
    let nested = format!(
        r#"{{"type":"ping","nonce":1,"x":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert_eq!(json_code(&nested), ErrorCode::BadFrame);
    let nested = format!(
        r#"{{"ch":1,"type":"ping","nonce":1,"x":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert_eq!(enveloped_code(&nested), ErrorCode::BadFrame);
    let invalid_utf8 = b"{\"type\":\"broadcast\",\"data\":\"\xff\xfe\"}";
    let err = decode::<ClientMessage>(Encoding::Json, invalid_utf8).unwrap_err();
    assert_eq!(err.code(), ErrorCode::BadFrame);
}

#[test]
fn a_type_the_server_does_not_know_is_unknown_type() {
    assert_eq!(json_code(r#"{"type":"teleport","nonce":1}"#), ErrorCode::UnknownType);
    assert_eq!(enveloped_code(r#"{"ch":1,"type":"welcome"}"#), ErrorCode::UnknownType);
    // bincode: the variant index past the last client message.
    let err = decode::<ClientMessage>(Encoding::Bincode, &[200, 1]).unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnknownType);
}

#[test]
fn wrong_missing_or_extra_fields_are_invalid_messages() {
    assert_eq!(json_code(r#"{"type":"ping"}"#), ErrorCode::InvalidMessage);
    assert_eq!(json_code(r#"{"type":"ping","nonce":"one"}"#), ErrorCode::InvalidMessage);
    assert_eq!(
        json_code(r#"{"type":"ping","nonce":1,"admin":true}"#),
        ErrorCode::InvalidMessage
    );
    assert_eq!(json_code(r#"{"nonce":1}"#), ErrorCode::InvalidMessage);
    assert_eq!(json_code("[1,2]"), ErrorCode::InvalidMessage);
    assert_eq!(
        enveloped_code(r#"{"ch":1,"type":"join","room":"r","admin":true}"#),
        ErrorCode::InvalidMessage
    );
}

#[test]
fn the_envelope_still_carries_valid_messages() {
    let (ch, msg) =
        decode_enveloped::<ClientMessage>(Encoding::Json, br#"{"ch":3,"type":"broadcast","seq":4,"data":"x"}"#)
            .unwrap();
    assert_eq!(ch, 3);
    assert_eq!(
        msg,
        ClientMessage::Broadcast {
            id: None,
            seq: Some(4),
            data: "x".into()
        }
    );
}
