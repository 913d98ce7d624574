//! Write commands: the only way state changes. Each is a self-contained, deterministic
//! description of a write (etcd's own request messages, with every server-side choice such
//! as a lease ID already made), so a log of commands replayed on any member yields the same
//! state. The encoding is a tag byte followed by the protobuf message: stable across
//! versions and the format of the Raft log entries.

use etcd_client::proto::{
    PbAlarmRequest, PbAlarmResponse, PbCompactionRequest, PbCompactionResponse, PbDeleteRequest,
    PbDeleteResponse, PbLeaseGrantRequest, PbLeaseGrantResponse, PbLeaseRevokeRequest,
    PbLeaseRevokeResponse, PbPutRequest, PbPutResponse, PbTxnRequest, PbTxnResponse,
};
use prost::Message;

use crate::auth::AuthCommand;
use crate::error::{Error, Result};

/// One write, as proposed and applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Put(PbPutRequest),
    DeleteRange(PbDeleteRequest),
    Txn(PbTxnRequest),
    Compact(PbCompactionRequest),
    /// `ID` is always non-zero here: the proposer picks it before proposing.
    LeaseGrant(PbLeaseGrantRequest),
    LeaseRevoke(PbLeaseRevokeRequest),
    /// Raise or clear an alarm (NOSPACE when a member passes its quota).
    Alarm(PbAlarmRequest),
    /// A change to users, roles or the auth switch (password hashes already computed).
    Auth(AuthCommand),
}

/// What applying a command answers (headers carry only the revision; the server fills in
/// cluster, member and term).
#[derive(Debug, Clone, PartialEq)]
pub enum CommandResult {
    Put(PbPutResponse),
    DeleteRange(PbDeleteResponse),
    Txn(PbTxnResponse),
    Compact(PbCompactionResponse),
    LeaseGrant(PbLeaseGrantResponse),
    LeaseRevoke(PbLeaseRevokeResponse),
    Alarm(PbAlarmResponse),
    /// An auth change succeeded (its responses carry only a header).
    Auth,
}

const TAG_PUT: u8 = 1;
const TAG_DELETE_RANGE: u8 = 2;
const TAG_TXN: u8 = 3;
const TAG_COMPACT: u8 = 4;
const TAG_LEASE_GRANT: u8 = 5;
const TAG_LEASE_REVOKE: u8 = 6;
const TAG_ALARM: u8 = 7;
const TAG_AUTH: u8 = 8;

/// Whether a Txn puts anything in either branch, nested Txns included: only such Txns
/// grow the store (the quota check and the NOSPACE alarm refuse them).
pub fn txn_puts(t: &PbTxnRequest) -> bool {
    use etcd_client::proto::PbTxnOpRequest;
    t.success
        .iter()
        .chain(&t.failure)
        .any(|op| match &op.request {
            Some(PbTxnOpRequest::RequestPut(_)) => true,
            Some(PbTxnOpRequest::RequestTxn(n)) => txn_puts(n),
            _ => false,
        })
}

impl CommandResult {
    /// Encodes the result as a tag byte and the protobuf body (how it crosses members).
    pub fn encode(&self) -> Vec<u8> {
        let (tag, body) = match self {
            CommandResult::Put(r) => (TAG_PUT, r.encode_to_vec()),
            CommandResult::DeleteRange(r) => (TAG_DELETE_RANGE, r.encode_to_vec()),
            CommandResult::Txn(r) => (TAG_TXN, r.encode_to_vec()),
            CommandResult::Compact(r) => (TAG_COMPACT, r.encode_to_vec()),
            CommandResult::LeaseGrant(r) => (TAG_LEASE_GRANT, r.encode_to_vec()),
            CommandResult::LeaseRevoke(r) => (TAG_LEASE_REVOKE, r.encode_to_vec()),
            CommandResult::Alarm(r) => (TAG_ALARM, r.encode_to_vec()),
            CommandResult::Auth => (TAG_AUTH, Vec::new()),
        };
        let mut out = Vec::with_capacity(body.len() + 1);
        out.push(tag);
        out.extend_from_slice(&body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<CommandResult> {
        let (&tag, body) = bytes
            .split_first()
            .ok_or_else(|| Error::Corrupt("empty command result".into()))?;
        Ok(match tag {
            TAG_PUT => CommandResult::Put(PbPutResponse::decode(body)?),
            TAG_DELETE_RANGE => CommandResult::DeleteRange(PbDeleteResponse::decode(body)?),
            TAG_TXN => CommandResult::Txn(PbTxnResponse::decode(body)?),
            TAG_COMPACT => CommandResult::Compact(PbCompactionResponse::decode(body)?),
            TAG_LEASE_GRANT => CommandResult::LeaseGrant(PbLeaseGrantResponse::decode(body)?),
            TAG_LEASE_REVOKE => CommandResult::LeaseRevoke(PbLeaseRevokeResponse::decode(body)?),
            TAG_ALARM => CommandResult::Alarm(PbAlarmResponse::decode(body)?),
            TAG_AUTH => CommandResult::Auth,
            other => return Err(Error::Corrupt(format!("unknown result tag {other}"))),
        })
    }
}

// Results cross members inside Raft responses; they travel in their protobuf encoding.
impl serde::Serialize for CommandResult {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&self.encode(), s)
    }
}

impl<'de> serde::Deserialize<'de> for CommandResult {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let bytes: Vec<u8> = serde::Deserialize::deserialize(d)?;
        CommandResult::decode(&bytes).map_err(serde::de::Error::custom)
    }
}

impl Command {
    /// Encodes the command as a tag byte and the protobuf body.
    pub fn encode(&self) -> Vec<u8> {
        let (tag, body) = match self {
            Command::Put(r) => (TAG_PUT, r.encode_to_vec()),
            Command::DeleteRange(r) => (TAG_DELETE_RANGE, r.encode_to_vec()),
            Command::Txn(r) => (TAG_TXN, r.encode_to_vec()),
            Command::Compact(r) => (TAG_COMPACT, r.encode_to_vec()),
            Command::LeaseGrant(r) => (TAG_LEASE_GRANT, r.encode_to_vec()),
            Command::LeaseRevoke(r) => (TAG_LEASE_REVOKE, r.encode_to_vec()),
            Command::Alarm(r) => (TAG_ALARM, r.encode_to_vec()),
            // postcard of a plain enum of strings and bytes cannot fail.
            Command::Auth(c) => (TAG_AUTH, c.encode().unwrap_or_default()),
        };
        let mut out = Vec::with_capacity(body.len() + 1);
        out.push(tag);
        out.extend_from_slice(&body);
        out
    }

    /// Decodes what [`Command::encode`] wrote; anything else is a `Corrupt` error.
    pub fn decode(bytes: &[u8]) -> Result<Command> {
        let (&tag, body) = bytes
            .split_first()
            .ok_or_else(|| Error::Corrupt("empty command".into()))?;
        Ok(match tag {
            TAG_PUT => Command::Put(PbPutRequest::decode(body)?),
            TAG_DELETE_RANGE => Command::DeleteRange(PbDeleteRequest::decode(body)?),
            TAG_TXN => Command::Txn(PbTxnRequest::decode(body)?),
            TAG_COMPACT => Command::Compact(PbCompactionRequest::decode(body)?),
            TAG_LEASE_GRANT => Command::LeaseGrant(PbLeaseGrantRequest::decode(body)?),
            TAG_LEASE_REVOKE => Command::LeaseRevoke(PbLeaseRevokeRequest::decode(body)?),
            TAG_ALARM => Command::Alarm(PbAlarmRequest::decode(body)?),
            TAG_AUTH => Command::Auth(AuthCommand::decode(body)?),
            other => return Err(Error::Corrupt(format!("unknown command tag {other}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_through_their_encoding() {
        let cmds = vec![
            Command::Put(PbPutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                lease: 7,
                prev_kv: true,
                ..Default::default()
            }),
            Command::LeaseGrant(PbLeaseGrantRequest { ttl: 5, id: 42 }),
            Command::Auth(AuthCommand::UserAdd {
                name: "alice".into(),
                password_hash: Some("$2b$04$hash".into()),
            }),
            Command::Compact(PbCompactionRequest {
                revision: 3,
                physical: true,
            }),
        ];
        for cmd in cmds {
            assert_eq!(Command::decode(&cmd.encode()).unwrap(), cmd);
        }
    }

    #[test]
    fn garbage_is_a_corrupt_error_not_a_panic() {
        assert!(matches!(Command::decode(&[]), Err(Error::Corrupt(_))));
        assert!(matches!(
            Command::decode(&[99, 1, 2]),
            Err(Error::Corrupt(_))
        ));
        assert!(matches!(
            Command::decode(&[1, 0xff, 0xff]),
            Err(Error::Corrupt(_))
        ));
    }
}
